// Command demo-server is a small HTTP server that knows nothing of the mesh.
// It answers every request with who it is and who called it, so a demo or
// test can see which instance served and the client address it saw.
//
//	demo-server --listen :8080 --name n1/p1 [--unix /meshlet/server/web] [--native web] [--delay 0]
//
// --native SERVICE also serves the Meshless native API's
// /meshlet/server/SERVICE ($MESHLESS_NATIVE_DIR instead of /meshlet).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/meshless/meshless/daemon/native"
)

func main() {
	listen := flag.String("listen", ":8080", "TCP address to serve on (empty: none)")
	unixPath := flag.String("unix", "", "unix socket to serve on as well")
	nativeService := flag.String("native", "", "serve the native API's /meshlet/server/`service` as well")
	name := flag.String("name", "", "instance name to report (default: hostname)")
	delay := flag.Duration("delay", 0, "delay before each answer")
	flag.Parse()
	if *name == "" {
		*name, _ = os.Hostname()
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, *listen, *unixPath, *nativeService, *name, *delay); err != nil {
		log.Fatal(err)
	}
}

func run(ctx context.Context, listen, unixPath, nativeService, name string, delay time.Duration) error {
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if delay > 0 {
			time.Sleep(delay)
		}
		fmt.Fprintf(w, "instance=%s client=%s path=%s\n", name, r.RemoteAddr, r.URL.Path)
	})
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	errc := make(chan error, 2)
	var lns []net.Listener
	if listen != "" {
		ln, err := net.Listen("tcp", listen)
		if err != nil {
			return err
		}
		lns = append(lns, ln)
	}
	if unixPath != "" {
		// A pod's /meshlet starts empty (the kubelet's emptyDir): make
		// server/ as a native server does.
		if err := os.MkdirAll(filepath.Dir(unixPath), 0o755); err != nil {
			return err
		}
		os.Remove(unixPath)
		ln, err := net.Listen("unix", unixPath)
		if err != nil {
			return err
		}
		lns = append(lns, ln)
	}
	if nativeService != "" {
		ln, err := native.Listen(nativeService)
		if err != nil {
			return err
		}
		lns = append(lns, ln)
	}
	if len(lns) == 0 {
		return errors.New("nothing to serve on: give --listen, --unix or --native")
	}
	for _, ln := range lns {
		go func(ln net.Listener) { errc <- srv.Serve(ln) }(ln)
	}
	select {
	case <-ctx.Done():
		return srv.Shutdown(context.Background())
	case err := <-errc:
		return err
	}
}
