package main

import (
	"context"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/meshless/meshless/internal/lab"
)

func init() {
	commands["lab"] = command{"run a local lab: nodes and pods as network namespaces (up|down|exec|status)", runLab}
}

// runLab hands over to the lab package. Ctrl-C cancels the context, so an
// interrupted `lab up` tears down what it made.
func runLab(args []string, stdout io.Writer) error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return lab.Main(ctx, args, stdout, os.Stderr)
}
