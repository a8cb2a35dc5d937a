package proxy

import (
	"bytes"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/meshless/meshless/daemon/decide"
	"github.com/meshless/meshless/daemon/identity"
	"github.com/meshless/meshless/daemon/metrics"
	"github.com/meshless/meshless/daemon/relay"
	"github.com/meshless/meshless/daemon/tunnel"
	"github.com/meshless/meshless/internal/testenv"
)

// TestPaths: each route kind takes its path, the server sees podA's IP,
// bytes arrive exactly, across a half-close, and the metrics name the path.
func TestPaths(t *testing.T) { testPaths(t, options{}) }

// TestPathsSockmap: the same with kernel forwarding; the byte counts come
// from the verdict program's counters.
func TestPathsSockmap(t *testing.T) {
	m, err := relay.LoadSockmap()
	if err != nil {
		t.Fatalf("load sockmap: %v", err)
	}
	defer m.Close()
	testPaths(t, options{proxy: Config{Sockmap: m}})
}

func testPaths(t *testing.T, cfg options) {
	ms := newMesh(t, cfg)
	payload := make([]byte, 3<<20)
	rand.Read(payload)
	listenIn(t, ms.ext, ipExt+":9000")
	listenIn(t, ms.podB, ipB+":8080")
	listenIn(t, ms.podC, ipC+":8080")

	tests := []struct {
		name, addr, path string
		n                *node // counts inbound for remote
	}{
		{"passthrough", ipExt + ":9000", "passthrough", nil},
		{"local pod", ipB + ":8080", "local", nil},
		{"remote pod", ipC + ":8080", "remote", ms.n2},
		{"local service", vipLocal + ":80", "local", nil},
		{"remote service", vipRemote + ":80", "remote", ms.n2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := counter(t, ms.n1, "connections", "outbound", tt.path)
			got, err := request(ms.podA, tt.addr, payload)
			if err != nil {
				t.Fatal(err)
			}
			want(t, got, ipA, payload)
			if d := counter(t, ms.n1, "connections", "outbound", tt.path) - before; d != 1 {
				t.Errorf("outbound %s connections +%v, want +1", tt.path, d)
			}
			if tt.n != nil && counter(t, tt.n, "connections", "inbound", "remote") < 1 {
				t.Errorf("%s counted no inbound remote connection", tt.n.name)
			}
		})
	}
	// A connection's bytes are counted when its relay ends, which may be
	// just after the client read the last answer.
	testenv.Eventually(t, 5*time.Second, func() error {
		if b := counter(t, ms.n1, "bytes", "outbound"); b < float64(5*len(payload)) {
			return fmt.Errorf("outbound bytes %v, want at least %d", b, 5*len(payload))
		}
		return nil
	})
}

// TestUDS: a pod serving a unix socket for the service gets the connection
// there, on this node and through the tunnel.
func TestUDS(t *testing.T) {
	ms := newMesh(t, options{})
	tcpB := listenIn(t, ms.podB, ipB+":8080")
	tcpC := listenIn(t, ms.podC, ipC+":8080")
	listenUnix(t, ms.n1.meshlet, "pod-b", "uds-local")
	listenUnix(t, ms.n2.meshlet, "pod-c", "uds-remote")
	listenUnix(t, ms.n1.meshlet, "pod-b", "8081") // pod route: by port
	payload := bytes.Repeat([]byte("meshlet"), 100000)

	got, err := request(ms.podA, vipLocal+":80", payload)
	if err != nil {
		t.Fatal(err)
	}
	want(t, got, "unix", payload)
	if c := counter(t, ms.n1, "connections", "outbound", "uds"); c != 1 {
		t.Errorf("n1 outbound uds %v, want 1", c)
	}

	got, err = request(ms.podA, vipRemote+":80", payload)
	if err != nil {
		t.Fatal(err)
	}
	want(t, got, "unix", payload)
	if c := counter(t, ms.n1, "connections", "outbound", "remote"); c != 1 {
		t.Errorf("n1 outbound remote %v, want 1", c)
	}
	if c := counter(t, ms.n2, "connections", "inbound", "uds"); c != 1 {
		t.Errorf("n2 inbound uds %v, want 1", c)
	}

	got, err = request(ms.podA, ipB+":8081", []byte("by port"))
	if err != nil {
		t.Fatal(err)
	}
	want(t, got, "unix", []byte("by port"))
	if tcpB.conns.Load()+tcpC.conns.Load() != 0 {
		t.Errorf("TCP listeners got %d connections, want 0", tcpB.conns.Load()+tcpC.conns.Load())
	}
}

// TestRace: with one endpoint that never answers (on n3) besides a
// local (B) and a remote (C) one, every connection still completes fast,
// the races are counted, and the black hole never receives an application
// byte. Racing all at once (--race-stagger 0), each race has the black
// hole and the slower endpoint lose; learning (the default), the local
// endpoint is tried first and nearly always wins alone.
func TestRace(t *testing.T) {
	const n = 20
	for _, tc := range []struct {
		name     string
		cfg      Config
		min, max float64 // lost races
		hole     bool    // the black hole is dialled
	}{
		{"learned (default)", Config{}, 0, n / 2, false},
		{"all at once", Config{RaceFixed: true}, n, 2 * n, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ms := newMesh(t, options{proxy: tc.cfg})
			listenIn(t, ms.podB, ipB+":8080")
			listenIn(t, ms.podC, ipC+":8080")
			for i := range n {
				start := time.Now()
				got, err := request(ms.podA, vipWeb+":80", []byte("race"))
				if err != nil {
					t.Fatalf("connection %d: %v", i, err)
				}
				want(t, got, ipA, []byte("race"))
				if d := time.Since(start); d > time.Second {
					t.Errorf("connection %d took %v", i, d)
				}
			}
			if w := counter(t, ms.n1, "race", "won"); w != n {
				t.Errorf("races won %v, want %d", w, n)
			}
			// Losers are reported in the background.
			testenv.Eventually(t, 5*time.Second, func() error {
				if l := counter(t, ms.n1, "race", "lost"); l < tc.min || l > tc.max {
					return fmt.Errorf("%v races lost, want %v..%v", l, tc.min, tc.max)
				}
				if tc.hole && ms.holeConns.Load() == 0 {
					return errors.New("the black hole was never dialled")
				}
				return nil
			})
			if b := ms.holeBytes.Load(); b != 0 {
				t.Errorf("the black hole received %d application bytes", b)
			}
		})
	}
}

// TestInbound: a client outside the mesh reaches podA's app through the
// inbound listener, which keeps the client's address; the strict policy
// refuses it unless it is a node address.
func TestInbound(t *testing.T) {
	ms := newMesh(t, options{})
	listenIn(t, ms.podA, ipA+":7000")
	got, err := request(ms.ext, ipA+":7000", []byte("probe"))
	if err != nil {
		t.Fatal(err)
	}
	want(t, got, ipExt, []byte("probe"))
	if c := counter(t, ms.n1, "connections", "inbound", "passthrough"); c != 1 {
		t.Errorf("inbound passthrough %v, want 1", c)
	}

}

// TestInboundStrict: the strict policy refuses a client outside the mesh
// unless it is one of the node's addresses.
func TestInboundStrict(t *testing.T) {
	addrs := &addrSet{}
	ms := newMesh(t, options{decide: decide.Config{InboundPolicy: decide.Strict, NodeAddrs: addrs}})
	listenIn(t, ms.podA, ipA+":7000")
	if _, err := request(ms.ext, ipA+":7000", []byte("x")); err == nil {
		t.Error("strict policy let a non-node client in")
	}
	if c := counter(t, ms.n1, "failures", metrics.ReasonInboundPolicy); c != 1 {
		t.Errorf("inbound_policy failures %v, want 1", c)
	}
	addrs.add(netip.MustParseAddr(ipExt))
	got, err := request(ms.ext, ipA+":7000", []byte("probe"))
	if err != nil {
		t.Fatal(err)
	}
	want(t, got, ipExt, []byte("probe"))
}

// addrSet is a decide.AddrSet the test changes while the daemon runs.
type addrSet struct {
	mu  sync.Mutex
	set map[netip.Addr]bool
}

func (s *addrSet) add(a netip.Addr) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.set == nil {
		s.set = map[netip.Addr]bool{}
	}
	s.set[a] = true
}

func (s *addrSet) Contains(a netip.Addr) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.set[a]
}

// TestTunnelRejects: plaintext on the tunnel port (an HTTP request, a
// version 1 header) is refused and counted; a node asking for a pod that
// is not on the far node, or speaking for a pod that is not its own, is
// refused; the same node speaking for its own pod gets through.
func TestTunnelRejects(t *testing.T) {
	ms := newMesh(t, options{})
	listenIn(t, ms.podB, ipB+":8080")
	listenIn(t, ms.podC, ipC+":8080")
	for _, send := range [][]byte{[]byte("GET / HTTP/1.1\r\n\r\n"), []byte("MLTN\x01\x00\x00\x10\x04\xc6\x12\xde\x02\x1f\x90\x00")} {
		c, err := net.Dial("tcp", ms.n2.tunnel.String())
		if err != nil {
			t.Fatal(err)
		}
		c.SetDeadline(time.Now().Add(10 * time.Second))
		c.Write(send)
		io.ReadAll(c) // until the server closes
		c.Close()
	}
	testenv.Eventually(t, 5*time.Second, func() error {
		if n := counter(t, ms.n2, "failures", identity.ReasonPlaintext); n < 2 {
			return fmt.Errorf("%v plaintext connections counted, want 2", n)
		}
		return nil
	})
	// n1's daemon, authenticated, asks n2 for ...
	cl := &tunnel.Client{TLS: ms.ca.Source(t, "n1").ClientConfig, Warm: -1}
	n2 := tunnel.Node{Name: "n2", Addr: ms.n2.tunnel}
	for _, tt := range []struct {
		name     string
		src, dst string
		reason   string // "" for allowed
	}{
		{"a pod of n1, not n2", ipA + ":40000", ipB + ":8080", metrics.ReasonForbidden},
		{"on behalf of n2's own pod", ipC + ":40000", ipC + ":8080", metrics.ReasonPeerSource},
		{"on behalf of nobody", "", ipC + ":8080", metrics.ReasonPeerSource},
		{"on behalf of its own pod", ipA + ":40000", ipC + ":8080", ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var src netip.AddrPort
			if tt.src != "" {
				src = netip.MustParseAddrPort(tt.src)
			}
			before := counter(t, ms.n2, "failures", tt.reason)
			c, err := cl.Dial(t.Context(), n2, tunnel.Header{Src: src, Dst: netip.MustParseAddrPort(tt.dst)})
			if tt.reason == "" {
				if err != nil {
					t.Fatal(err)
				}
				c.Close()
				return
			}
			var se *tunnel.StatusError
			if !errors.As(err, &se) || se.Status != tunnel.StatusForbidden {
				t.Errorf("%v, want forbidden", err)
			}
			testenv.Eventually(t, 5*time.Second, func() error {
				if counter(t, ms.n2, "failures", tt.reason)-before != 1 {
					return errors.New("not counted: " + tt.reason)
				}
				return nil
			})
		})
	}
}
