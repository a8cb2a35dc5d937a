package app_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/meshless/meshless/daemon/app"
	"github.com/meshless/meshless/daemon/cniapi"
	"github.com/meshless/meshless/internal/nstest"
	"github.com/meshless/meshless/internal/podtest"
	"github.com/meshless/meshless/internal/testenv"
)

// TestRunServesAndShutsDown runs the whole daemon: admin endpoints answer,
// a pod registers through the socket, and cancelling removes the socket
// while the state stays for the next start, which restores the pod.
func TestRunServesAndShutsDown(t *testing.T) {
	cfg := testConfig(t)
	pod := podtest.NewPod(t, "198.19.1.2/24")
	p := podtest.Pod("c1", pod, "198.19.1.2")

	for round := range 2 {
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- app.Run(ctx, cfg) }()
		base := "http://" + cfg.AdminAddr
		testenv.Eventually(t, 10*time.Second, func() error {
			select {
			case err := <-done:
				t.Fatalf("run: %v", err)
			default:
			}
			if code, body := tryGet(base + "/readyz"); code != 200 {
				return fmt.Errorf("readyz %d %q", code, body)
			}
			return nil
		})
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

// testConfig is a daemon's configuration in a folder of the test's, with
// an empty registry file.
func testConfig(t *testing.T) app.Config {
	t.Helper()
	nstest.RequireRoot(t)
	dir := t.TempDir()
	reg := filepath.Join(dir, "registry.yaml")
	if err := os.WriteFile(reg, []byte("{}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return app.Config{
		NodeName:  "n1",
		Socket:    filepath.Join(dir, "run", "cni.sock"),
		StateDir:  filepath.Join(dir, "state"),
		AdminAddr: freeAddr(t),
		Registry:  reg,
	}
}

// freeAddr returns a loopback address with a port free right now.
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// tryGet is get for polling: a connection error is status 0.
func tryGet(url string) (int, string) {
	resp, err := http.Get(url)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
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

// TestRunDiscoveryFails: when the Kubernetes source cannot start, Run
// returns that error, also when pods saved by an earlier run are restored
// (it used to say "restore state: context canceled", or log "ready" and
// exit).
func TestRunDiscoveryFails(t *testing.T) {
	cfg := testConfig(t)
	reg := cfg.Registry
	cfg.Registry = ""
	for _, saved := range []bool{false, true} {
		if saved {
			// A first run with a registry leaves a pod's state behind.
			pod := podtest.NewPod(t, "198.19.1.3/24")
			c := cfg
			c.Registry = reg
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error, 1)
			go func() { done <- app.Run(ctx, c) }()
			testenv.Eventually(t, 10*time.Second, func() error {
				_, err := cniapi.NewClient(c.Socket).Register(ctx, podtest.Pod("c2", pod, "198.19.1.3"))
				return err
			})
			cancel()
			if err := <-done; err != nil {
				t.Fatal(err)
			}
		}
		c := cfg
		c.Kubeconfig = filepath.Join(t.TempDir(), "no-such-kubeconfig")
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		err := app.Run(ctx, c)
		cancel()
		if err == nil || !strings.Contains(err.Error(), "kubernetes discovery") || strings.Contains(err.Error(), "context canceled") {
			t.Errorf("saved pods %v: Run = %v, want the discovery error", saved, err)
		}
	}
}
