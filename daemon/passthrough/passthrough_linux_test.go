package passthrough_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http/httptest"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"

	"github.com/meshless/meshless/daemon/admin"
	"github.com/meshless/meshless/daemon/agent"
	"github.com/meshless/meshless/daemon/internal/podtest"
	"github.com/meshless/meshless/daemon/metrics"
	"github.com/meshless/meshless/daemon/passthrough"
	"github.com/meshless/meshless/daemon/podstore"
	"github.com/meshless/meshless/internal/nstest"
)

// redirectRule is what the CNI plugin's rules do for outbound traffic,
// reduced to one destination range; packets with the skip mark pass.
var redirectRule = []string{"iptables", "-w", "-t", "nat", "-A", "OUTPUT", "-p", "tcp",
	"-m", "mark", "!", "--mark", "0x4d4c/0xffff", "-d", "198.18.200.0/24",
	"-j", "REDIRECT", "--to-ports", "15001"}

// TestOutboundEndToEnd: a client in pod A connects to a server in netns B
// through the redirect, the daemon's listener in A and a passthrough dial
// from A; bytes flow both ways across a half-close.
func TestOutboundEndToEnd(t *testing.T) {
	nstest.RequireRoot(t)
	families := []struct {
		name, network, podIP, podPrefix, srvPrefix, srvAddr string
		rule                                                []string
	}{
		{"ipv4", "tcp4", "198.18.200.2", "198.18.200.2/24", "198.18.200.1/24", "198.18.200.1:9000", redirectRule},
		{"ipv6", "tcp6", "fd00:200::2", "fd00:200::2/64", "fd00:200::1/64", "[fd00:200::1]:9000", []string{
			"ip6tables", "-w", "-t", "nat", "-A", "OUTPUT", "-p", "tcp",
			"-m", "mark", "!", "--mark", "0x4d4c/0xffff", "-d", "fd00:200::/64",
			"-j", "REDIRECT", "--to-ports", "15001"}},
	}
	for _, f := range families {
		t.Run(f.name, func(t *testing.T) {
			podA := podtest.NewNS(t)
			srvNS := podtest.NewNS(t)
			podtest.Veth(t, podA, f.podPrefix, srvNS, f.srvPrefix)
			podtest.Run(t, podA, f.rule...)
			outbound(t, podA, srvNS, f.network, f.podIP, f.srvAddr)
		})
	}
}

func outbound(t *testing.T, podA, srvNS ns.NetNS, network, podIP, srvAddr string) {
	m := metrics.New()
	a := startAgent(t, m)
	if _, err := a.Register(context.Background(), podtest.Pod("a", podA, podIP)); err != nil {
		t.Fatal(err)
	}

	// The server reads the whole request (until the client's FIN), then
	// answers and reports the peer it saw.
	ln := podtest.Listen(t, srvNS, network, srvAddr)
	peer := make(chan string, 4)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				req, _ := io.ReadAll(c)
				peer <- c.RemoteAddr().String()
				fmt.Fprintf(c, "got %q", req)
			}()
		}
	}()

	tests := []struct{ req string }{{"hello"}, {""}, {strings.Repeat("x", 256<<10)}}
	for i, tt := range tests {
		c, err := podtest.Dial(podA, network, srvAddr)
		if err != nil {
			t.Fatalf("connect: %v", err)
		}
		if _, err := c.Write([]byte(tt.req)); err != nil {
			t.Fatal(err)
		}
		if err := c.CloseWrite(); err != nil {
			t.Fatal(err)
		}
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		resp, err := io.ReadAll(c)
		c.Close()
		if err != nil {
			t.Fatalf("read reply after CloseWrite: %v", err)
		}
		if want := fmt.Sprintf("got %q", tt.req); string(resp) != want {
			t.Fatalf("reply %.60q, want %.60q", resp, want)
		}
		// Passthrough egress leaves with the pod's own address.
		if p := <-peer; !strings.HasPrefix(strings.Trim(p, "[]"), podIP) {
			t.Errorf("server saw peer %s, want the pod address", p)
		}
		want := float64(i + 1)
		podtest.Eventually(t, 5*time.Second, func() error {
			got := podtest.Metric(t, m.Registry, "meshless_connections_total",
				map[string]string{"direction": "outbound", "path": "passthrough"})
			if got != want {
				return fmt.Errorf("meshless_connections_total{outbound,passthrough} = %v, want %v", got, want)
			}
			return nil
		})
	}
	podtest.Eventually(t, 5*time.Second, func() error {
		if got := podtest.Metric(t, m.Registry, "meshless_bytes_total", map[string]string{"direction": "outbound"}); got <= 256<<10 {
			return fmt.Errorf("meshless_bytes_total{outbound} = %v", got)
		}
		return nil
	})

	// The same numbers through the admin server's /metrics.
	srv := httptest.NewServer(admin.NewHandler(func() error { return nil }, m.Registry))
	defer srv.Close()
	resp, err := srv.Client().Get(srv.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if line := `meshless_connections_total{direction="outbound",path="passthrough"} 3`; !strings.Contains(string(body), line) {
		t.Errorf("/metrics lacks %s", line)
	}
}

// TestNotRedirected: a connection straight to the listener has no other
// original destination; the daemon must refuse it, not dial itself.
func TestNotRedirected(t *testing.T) {
	nstest.RequireRoot(t)
	pod := podtest.NewPod(t, "198.19.1.2/24")
	// A NAT rule makes the netns track connections, as real pods do.
	podtest.Run(t, pod, redirectRule...)
	m := metrics.New()
	a := startAgent(t, m)
	if _, err := a.Register(context.Background(), podtest.Pod("p", pod, "198.19.1.2")); err != nil {
		t.Fatal(err)
	}
	// The reset may come before connect returns or at the first read.
	if c, err := podtest.Dial(pod, "tcp4", "127.0.0.1:15001"); err == nil {
		defer c.Close()
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		if _, err := c.Read(make([]byte, 1)); !errors.Is(err, syscall.ECONNRESET) {
			t.Fatalf("read: %v, want connection reset", err)
		}
	} else if !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("connect: %v", err)
	}
	podtest.Eventually(t, 5*time.Second, func() error {
		if got := podtest.Metric(t, m.Registry, "meshless_connection_failures_total", map[string]string{"reason": "loop"}); got != 1 {
			return fmt.Errorf("failures{loop} = %v, want 1", got)
		}
		return nil
	})
}

// TestInbound: a connection redirected to :15006 is delivered to the
// pod's own server on its original port.
func TestInbound(t *testing.T) {
	nstest.RequireRoot(t)
	pod := podtest.NewNS(t)
	client := podtest.NewNS(t)
	podtest.Veth(t, pod, "198.18.200.2/24", client, "198.18.200.1/24")
	podtest.Run(t, pod, "iptables", "-w", "-t", "nat", "-A", "PREROUTING", "-p", "tcp",
		"-d", "198.18.200.2", "--dport", "8080", "-j", "REDIRECT", "--to-ports", "15006")
	m := metrics.New()
	a := startAgent(t, m)
	if _, err := a.Register(context.Background(), podtest.Pod("p", pod, "198.18.200.2")); err != nil {
		t.Fatal(err)
	}
	ln := podtest.Listen(t, pod, "tcp4", "198.18.200.2:8080")
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		io.Copy(c, c)
	}()
	c, err := podtest.Dial(client, "tcp4", "198.18.200.2:8080")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.Write([]byte("ping"))
	c.CloseWrite()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	b, err := io.ReadAll(c)
	if err != nil || string(b) != "ping" {
		t.Fatalf("echo %q, %v", b, err)
	}
	if got := podtest.Metric(t, m.Registry, "meshless_connections_total",
		map[string]string{"direction": "inbound", "path": "passthrough"}); got != 1 {
		t.Errorf("inbound passthrough count %v, want 1", got)
	}
	if got := podtest.Metric(t, m.Registry, "meshless_connections_total",
		map[string]string{"direction": "outbound", "path": "passthrough"}); got != 0 {
		t.Errorf("outbound passthrough count %v, want 0", got)
	}
}

func startAgent(t *testing.T, m *metrics.Metrics) *agent.Agent {
	t.Helper()
	store, err := podstore.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	a, err := agent.New(agent.Config{Store: store, Handler: &passthrough.Handler{Metrics: m}, Metrics: m})
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close() })
	return a
}
