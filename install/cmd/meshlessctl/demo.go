package main

import (
	"context"
	"flag"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/meshless/meshless/internal/demo"
)

func init() {
	commands["demo"] = command{"show the mesh at work on a two-node local lab, then remove it", runDemo}
}

func runDemo(args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("demo", flag.ContinueOnError)
	var o demo.Options
	fs.StringVar(&o.Name, "name", "demo", "lab name (prefix of its network namespaces)")
	fs.StringVar(&o.BinDir, "bin-dir", "", "folder of meshlessd, meshless-cni, demo-server, demo-client (default: this program's folder)")
	fs.StringVar(&o.CNIBinDir, "cni-bin-dir", "", "folder of the reference CNI plugins (default: the lab's)")
	fs.IntVar(&o.Requests, "requests", 20, "requests per call")
	if err := fs.Parse(args); err != nil {
		return err
	}
	// Ctrl-C cancels the context; Run tears the lab down before returning.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return demo.Run(ctx, stdout, o)
}
