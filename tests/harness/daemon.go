package harness

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
)

// DaemonOptions configure one meshlessd process.
type DaemonOptions struct {
	// Dir holds the socket, state dir and log; a t.TempDir() when empty.
	// Reuse it to restart a daemon over the same state.
	Dir string
	// NodeName defaults to "n1".
	NodeName string
	// Args are appended to the command line.
	Args []string
	// Netns, when set, runs the daemon inside that named netns (ip netns
	// exec), as a node of a lab.
	Netns string
	// NetnsPath, when set, runs the daemon inside the netns at that path
	// only (nsenter --net): unlike Netns, it shares the test's mount
	// namespace, so it sees the netns bind mounts a container runtime
	// makes meanwhile. The admin endpoint is then reached from inside that
	// netns.
	NetnsPath string
}

// Daemon is a running meshlessd.
type Daemon struct {
	t      testing.TB
	cmd    *exec.Cmd
	done   chan struct{}
	Dir    string
	Socket string
	// Admin is the admin endpoint's host:port.
	Admin   string
	LogPath string
	hc      *http.Client
}

// StartDaemon starts meshlessd and waits until /readyz answers 200. The
// daemon is stopped when t ends, and its log is printed if t failed.
func StartDaemon(t testing.TB, bins Bins, o DaemonOptions) *Daemon {
	t.Helper()
	if o.Dir == "" {
		o.Dir = t.TempDir()
	}
	if o.NodeName == "" {
		o.NodeName = "n1"
	}
	d := &Daemon{
		t:       t,
		Dir:     o.Dir,
		Socket:  filepath.Join(o.Dir, "run", "cni.sock"),
		Admin:   freeAddr(t),
		LogPath: filepath.Join(o.Dir, fmt.Sprintf("meshlessd.%d.log", time.Now().UnixNano())),
		done:    make(chan struct{}),
		hc:      http.DefaultClient,
	}
	if o.NetnsPath != "" {
		d.hc = &http.Client{Transport: &http.Transport{DialContext: netnsDialer(o.NetnsPath), DisableKeepAlives: true}}
	}
	args := []string{
		"--node-name", o.NodeName,
		"--socket", d.Socket,
		"--state-dir", filepath.Join(o.Dir, "state"),
		"--admin-addr", d.Admin,
	}
	if !slices.Contains(o.Args, "--kubeconfig") && !slices.Contains(o.Args, "--registry") {
		// An empty registry: this daemon routes nothing but passthrough.
		reg := filepath.Join(o.Dir, "registry.yaml")
		if err := os.WriteFile(reg, []byte("{}\n"), 0o600); err != nil {
			t.Fatalf("registry: %v", err)
		}
		args = append(args, "--registry", reg)
	}
	args = append(args, o.Args...)
	name := bins.Path("meshlessd")
	switch {
	case o.Netns != "":
		args = append([]string{"netns", "exec", o.Netns, name}, args...)
		name = "ip"
	case o.NetnsPath != "":
		args = append([]string{"--net=" + o.NetnsPath, "--", name}, args...)
		name = "nsenter"
	}
	logf, err := os.Create(d.LogPath)
	if err != nil {
		t.Fatalf("daemon log: %v", err)
	}
	d.cmd = exec.Command(name, args...)
	d.cmd.Stdout, d.cmd.Stderr = logf, logf
	if err := d.cmd.Start(); err != nil {
		t.Fatalf("start meshlessd: %v", err)
	}
	go func() {
		d.cmd.Wait()
		logf.Close()
		close(d.done)
	}()
	t.Cleanup(func() {
		d.Stop()
		if t.Failed() {
			b, _ := os.ReadFile(d.LogPath)
			t.Logf("meshlessd log (%s):\n%s", d.LogPath, Tail(string(b), 60))
		}
	})
	d.WaitReady()
	return d
}

// WaitReady polls /readyz until it answers 200, failing t after 20s or if
// the daemon exits.
func (d *Daemon) WaitReady() {
	d.t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-d.done:
			b, _ := os.ReadFile(d.LogPath)
			d.t.Fatalf("meshlessd exited before ready: %v\n%s", d.cmd.ProcessState, Tail(string(b), 40))
		default:
		}
		if code, _ := d.Get("/readyz"); code == http.StatusOK {
			return
		}
		time.Sleep(20 * time.Millisecond) // polling interval, not synchronisation
	}
	d.t.Fatalf("meshlessd not ready after 20s")
}

// Get fetches path from the admin endpoint.
func (d *Daemon) Get(path string) (int, string) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+d.Admin+path, nil)
	resp, err := d.hc.Do(req)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// Metric returns the value of the sample whose line starts with series,
// e.g. `meshless_connections_total{direction="outbound",path="passthrough"}`,
// or 0 when there is none.
func (d *Daemon) Metric(series string) float64 {
	d.t.Helper()
	code, body := d.Get("/metrics")
	if code != http.StatusOK {
		d.t.Fatalf("GET /metrics: %d %s", code, body)
	}
	for _, line := range strings.Split(body, "\n") {
		if rest, ok := strings.CutPrefix(line, series+" "); ok {
			var v float64
			fmt.Sscan(rest, &v)
			return v
		}
	}
	return 0
}

// Stop sends SIGTERM and waits for the daemon to exit (SIGKILL after 10s).
func (d *Daemon) Stop() { d.signal(syscall.SIGTERM, 10*time.Second) }

// Kill ends the daemon with SIGKILL, as a crash would.
func (d *Daemon) Kill() { d.signal(syscall.SIGKILL, 10*time.Second) }

func (d *Daemon) signal(sig syscall.Signal, grace time.Duration) {
	select {
	case <-d.done:
		return
	default:
	}
	d.cmd.Process.Signal(sig)
	select {
	case <-d.done:
	case <-time.After(grace):
		d.cmd.Process.Kill()
		<-d.done
	}
}

func freeAddr(t testing.TB) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("free port: %v", err)
	}
	defer l.Close()
	return l.Addr().String()
}
