package main

import (
	"context"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/meshless/meshless/install/cni"
)

func init() {
	commands["install-cni"] = command{"install meshless-cni into the host's CNI dirs and keep it in the primary conflist", runInstallCNI}
}

// runInstallCNI is what the DaemonSet runs. SIGTERM ends --watch cleanly.
func runInstallCNI(args []string, stdout io.Writer) error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return cni.Main(ctx, args, stdout, os.Stderr)
}
