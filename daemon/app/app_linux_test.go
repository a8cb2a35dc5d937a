package app_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/meshless/meshless/daemon/app"
	"github.com/meshless/meshless/daemon/cniapi"
	"github.com/meshless/meshless/internal/podtest"
	"github.com/meshless/meshless/internal/nstest"
)

// TestRunServesAndShutsDown runs the whole daemon: admin endpoints answer,
// a pod registers through the socket, and cancelling removes the socket
// while the state stays for the next start, which restores the pod.
func TestRunServesAndShutsDown(t *testing.T) {
	nstest.RequireRoot(t)
	dir := t.TempDir()
	reg := filepath.Join(dir, "registry.yaml")
	if err := os.WriteFile(reg, []byte("{}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := app.Config{
		NodeName:  "n1",
		Socket:    filepath.Join(dir, "run", "cni.sock"),
		StateDir:  filepath.Join(dir, "state"),
		AdminAddr: "127.0.0.1:0",
		Registry:  reg,
	}
	pod := podtest.NewPod(t, "198.19.1.2/24")
	p := podtest.Pod("c1", pod, "198.19.1.2")

	for round := range 2 {
		started := make(chan *app.Daemon, 1)
		cfg.Started = func(d *app.Daemon) { started <- d }
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- app.Run(ctx, cfg) }()
		var d *app.Daemon
		select {
		case d = <-started:
		case err := <-done:
			t.Fatalf("run: %v", err)
		case <-time.After(10 * time.Second):
			t.Fatal("daemon did not start")
		}
		base := "http://" + d.AdminAddr.String()
		tests := []struct{ path, want string }{
			{"/healthz", "ok"},
			{"/readyz", "ready"},
			{"/metrics", "meshless_pods " + fmt.Sprint(round)},
		}
		for _, tt := range tests {
			code, body := get(t, base+tt.path)
			if code != 200 || !strings.Contains(body, tt.want) {
				t.Errorf("round %d: GET %s = %d %.200q, want 200 with %q", round, tt.path, code, body, tt.want)
			}
		}
		c := cniapi.NewClient(cfg.Socket)
		if round == 0 {
			if _, err := c.Register(ctx, p); err != nil {
				t.Fatal(err)
			}
		} else if _, err := c.Get(ctx, p.Attachment); err != nil {
			t.Errorf("pod not restored on second start: %v", err)
		}
		if err := podtest.Listening(pod, "tcp4", "127.0.0.1:15001"); err != nil {
			t.Fatalf("round %d: listener in pod: %v", round, err)
		}

		cancel()
		if err := <-done; err != nil {
			t.Fatalf("run returned %v", err)
		}
		if _, err := os.Lstat(cfg.Socket); !os.IsNotExist(err) {
			t.Errorf("socket left after shutdown: %v", err)
		}
		if err := podtest.Refused(pod, "tcp4", "127.0.0.1:15001"); err != nil {
			t.Errorf("listener left after shutdown: %v", err)
		}
		if _, err := os.Stat(filepath.Join(cfg.StateDir, p.Key()+".json")); err != nil {
			t.Errorf("state gone after shutdown: %v", err)
		}
	}
}

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestRunNeedsDiscovery: without --registry or --kubeconfig outside a
// cluster the daemon refuses to start and says what to give it.
func TestRunNeedsDiscovery(t *testing.T) {
	nstest.RequireRoot(t)
	t.Setenv("KUBERNETES_SERVICE_HOST", "")
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	err := app.Run(ctx, app.Config{
		NodeName:  "n1",
		Socket:    filepath.Join(dir, "run", "cni.sock"),
		StateDir:  filepath.Join(dir, "state"),
		AdminAddr: "127.0.0.1:0",
	})
	if err == nil || !strings.Contains(err.Error(), "--registry") || !strings.Contains(err.Error(), "--kubeconfig") {
		t.Fatalf("Run without discovery = %v, want an error naming --registry and --kubeconfig", err)
	}
}
