// Command pause is the pod sandbox ("pause") container of the real-node
// test (tests/k8s): it holds the pod's namespaces and sleeps until it is
// told to stop. Static, so it runs alone in a one-file image.
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	c := make(chan os.Signal, 1)
	signal.Notify(c, syscall.SIGINT, syscall.SIGTERM)
	// As PID 1 of the sandbox it also reaps; it has no children to reap.
	<-c
}
