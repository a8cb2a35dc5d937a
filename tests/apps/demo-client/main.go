// Command demo-client is a small HTTP client that knows nothing of the mesh.
// It sends --n requests to a URL over one keep-alive connection (or a new
// connection each with --new-conn) and prints the last answer and latency
// percentiles. With --native it reaches the service through the Meshless
// native API (package native) instead of TCP: the one mesh-aware option.
//
//	demo-client --n 50 http://198.18.100.10/
//	demo-client --n 50 --native default/hello/hello http://hello/
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"slices"
	"time"

	"github.com/meshless/meshless/daemon/native"
)

func main() {
	n := flag.Int("n", 20, "number of requests")
	newConn := flag.Bool("new-conn", false, "a new TCP connection per request")
	timeout := flag.Duration("timeout", 5*time.Second, "per-request timeout")
	nativeTarget := flag.String("native", "", "reach namespace/meshlet/service through /meshlet/client/meshless ($MESHLESS_NATIVE_DIR) instead of TCP")
	flag.Parse()
	if flag.NArg() != 1 {
		fmt.Fprintln(os.Stderr, "usage: demo-client [--n N] [--new-conn] URL")
		os.Exit(2)
	}
	if err := run(flag.Arg(0), *n, *newConn, *timeout, *nativeTarget); err != nil {
		fmt.Fprintln(os.Stderr, "demo-client:", err)
		os.Exit(1)
	}
}

func run(url string, n int, newConn bool, timeout time.Duration, nativeTarget string) error {
	tr := &http.Transport{DisableKeepAlives: newConn, MaxIdleConnsPerHost: 1}
	if nativeTarget != "" {
		tr.DialContext = func(ctx context.Context, _, _ string) (net.Conn, error) { return native.Dial(ctx, nativeTarget) }
	}
	c := &http.Client{Transport: tr, Timeout: timeout}
	var lat []time.Duration
	var last string
	for i := 0; i < n; i++ {
		start := time.Now()
		resp, err := c.Get(url)
		if err != nil {
			return fmt.Errorf("request %d: %w", i+1, err)
		}
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			return fmt.Errorf("request %d: read: %w", i+1, err)
		}
		lat = append(lat, time.Since(start))
		last = string(b)
	}
	slices.Sort(lat)
	pct := func(p float64) time.Duration { return lat[int(float64(len(lat)-1)*p)] }
	fmt.Printf("%s", last)
	fmt.Printf("requests=%d p50=%s p90=%s max=%s\n", n, pct(0.5), pct(0.9), lat[len(lat)-1])
	return nil
}
