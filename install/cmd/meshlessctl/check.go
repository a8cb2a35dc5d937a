package main

import (
	"context"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/meshless/meshless/install/check"
)

func init() {
	commands["check"] = command{"preflight of this node and the cluster: one line per check, OK or what to fix", runCheck}
}

// runCheck prints the report; failed checks make the exit status 1
// without a second error line (the report said it).
func runCheck(args []string, stdout io.Writer) error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	err := check.Main(ctx, args, stdout, os.Stderr)
	if _, ok := err.(*check.FailedError); ok {
		return exitCode(1)
	}
	return err
}

// exitCode ends meshlessctl with its status, quietly (see dispatch).
type exitCode int

func (e exitCode) Error() string { return "exit status" }
func (e exitCode) ExitCode() int { return int(e) }
