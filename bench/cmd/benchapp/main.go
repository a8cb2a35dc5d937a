// Command benchapp is the benchmark's application, run inside the lab's
// pods: an echo server and the load clients of package bench/load. Each
// client prints one JSON result on stdout.
//
// The native API (-native, -addr native:...) uses the pod's Meshless
// folder: $MESHLESS_NATIVE_DIR, or /meshlet when unset. The lab's pods
// share the host's file system, so the bench sets it for each pod.
//
//	benchapp server -tcp 0.0.0.0:8080 -unix /run/x.sock -native bench-same
//	benchapp lat  -addr 198.19.1.3:8080 -size 1 -rate 1000 -dur 2s
//	benchapp lat  -addr native:default/bench/bench-same -size 1 -rate 1000 -dur 2s
//	benchapp conn -addr 198.19.1.3:8080 -dur 2s | -count 200 -c 8
//	benchapp bulk -addr 198.19.1.3:8080 -dur 2s
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"net"
	"os"
	"strings"
	"time"

	"github.com/meshless/meshless/bench/load"
	"github.com/meshless/meshless/daemon/native"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: benchapp server|lat|conn|bulk [flags]")
		os.Exit(2)
	}
	if err := run(os.Args[1], os.Args[2:]); err != nil {
		fmt.Fprintln(os.Stderr, "benchapp:", err)
		os.Exit(1)
	}
}

func run(cmd string, args []string) error {
	fs := flag.NewFlagSet(cmd, flag.ContinueOnError)
	var (
		tcpAddr = fs.String("tcp", "", "server: TCP listen address")
		unixP   = fs.String("unix", "", "server: unix socket path")
		nativeS = fs.String("native", "", "server: also serve this service of the pod's Meshlet on the native API")
		addr    = fs.String("addr", "", "client: host:port, unix:/path or native:namespace/meshlet/service")
		size    = fs.Int("size", 1, "lat: message size")
		rate    = fs.Float64("rate", 0, "lat: requests/s (0: full speed)")
		conns   = fs.Int("conns", 1, "lat: connections")
		dur     = fs.Duration("dur", 2*time.Second, "measured duration")
		warm    = fs.Duration("warmup", 200*time.Millisecond, "lat: unmeasured warm-up")
		count   = fs.Int("count", 0, "conn: stop after this many connections")
		conc    = fs.Int("c", 1, "conn: connections in flight")
	)
	if err := fs.Parse(args); err != nil {
		return err
	}
	if cmd == "server" {
		return serve(*tcpAddr, *unixP, *nativeS)
	}
	d := load.Dialer{Network: "tcp4", Addr: *addr}
	if p, ok := strings.CutPrefix(*addr, "unix:"); ok {
		d = load.Dialer{Network: "unix", Addr: p}
	} else if t, ok := strings.CutPrefix(*addr, "native:"); ok {
		d = load.Dialer{Network: load.NetworkNative, Addr: t}
	}
	ctx := context.Background()
	var (
		res any
		err error
	)
	switch cmd {
	case "lat":
		res, err = load.Latency(ctx, d, load.LatencyOptions{Size: *size, Rate: *rate, Conns: *conns, Duration: *dur, Warmup: *warm})
	case "conn":
		res, err = load.Conns(ctx, d, load.ConnOptions{Duration: *dur, Count: *count, Concurrency: *conc})
	case "bulk":
		res, err = load.Bulk(ctx, d, *dur)
	default:
		return fmt.Errorf("unknown command %q", cmd)
	}
	if err != nil {
		return err
	}
	return json.NewEncoder(os.Stdout).Encode(res)
}

func serve(tcpAddr, unixPath, service string) error {
	errc := make(chan error, 3)
	if tcpAddr != "" {
		ln, err := net.Listen("tcp4", tcpAddr)
		if err != nil {
			return err
		}
		go func() { errc <- load.Serve(ln) }()
	}
	if unixPath != "" {
		os.Remove(unixPath)
		ln, err := net.Listen("unix", unixPath)
		if err != nil {
			return err
		}
		defer os.Remove(unixPath)
		go func() { errc <- load.Serve(ln) }()
	}
	if service != "" {
		ln, err := native.Listen(service)
		if err != nil {
			return err
		}
		defer ln.Close()
		go func() { errc <- load.Serve(ln) }()
	}
	if tcpAddr == "" && unixPath == "" && service == "" {
		return fmt.Errorf("server: give -tcp, -unix and/or -native")
	}
	return <-errc
}
