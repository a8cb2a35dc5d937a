package tunnel

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meshless/meshless/internal/testenv"
)

// gateListener counts accepted connections and, once closed, stops
// handing new ones to the server (they wait in the kernel's backlog,
// unanswered), while connections accepted before keep being served.
type gateListener struct {
	net.Listener
	accepted atomic.Int64
	mu       sync.Mutex
	shut     chan struct{}
}

func (g *gateListener) Accept() (net.Conn, error) {
	c, err := g.Listener.Accept()
	if err != nil {
		return nil, err
	}
	select {
	case <-g.shut:
		<-make(chan struct{}) // never: the test ends the process' use
	default:
	}
	g.accepted.Add(1)
	return c, nil
}

func (g *gateListener) close() { g.mu.Lock(); close(g.shut); g.mu.Unlock() }

// startGated serves s as n2 behind a gateListener.
func startGated(t *testing.T, i *ids, s *Server) (Node, *gateListener, <-chan rejection) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g := &gateListener{Listener: ln, shut: make(chan struct{})}
	rej := make(chan rejection, 64)
	s.OnReject = func(e *RejectError) { rej <- rejection{e.Reason(), e} }
	s.TLS, s.Relay = i.n2.ServerConfig(), testRelay
	ctx, cancel := context.WithCancel(context.Background())
	go s.Serve(ctx, g)
	t.Cleanup(func() { cancel(); ln.Close() })
	return Node{Name: "n2", Addr: ln.Addr().(*net.TCPAddr).AddrPort()}, g, rej
}

// TestPoolReady: once a node was used, connections to it are handshaken
// ahead of need: with the server accepting no new connection at all, the
// next Dials still get through, on connections made before.
func TestPoolReady(t *testing.T) {
	i := newIDs(t)
	node, gate, _ := startGated(t, i, &Server{Dialer: &localDialer{}})
	dst, _ := app(t)
	cl := &Client{TLS: i.n1.ClientConfig, Warm: 2}
	defer cl.Close()
	c, err := cl.Dial(ctxT(t), node, Header{Dst: dst})
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
	// The miss raised the node's target to 4 ready connections.
	testenv.Eventually(t, 10*time.Second, func() error {
		if n := cl.ready(node); n < 4 {
			return fmt.Errorf("%d ready connections, want 4", n)
		}
		return nil
	})
	gate.close()
	for n := range 3 {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		c, err := cl.Dial(ctx, node, Header{Dst: netip.MustParseAddrPort("127.0.0.1:9")})
		cancel()
		var se *StatusError
		// The far side answers (refused: nothing listens on :9), so the
		// tunnel itself worked without a new handshake.
		if !errors.As(err, &se) || se.Status != StatusRefused {
			if c != nil {
				c.Close()
			}
			t.Fatalf("dial %d with the server accepting nothing new: %v, want a ready connection", n, err)
		}
	}
}

// ready counts the client's ready connections to n.
func (c *Client) ready(n Node) int {
	c.pool.mu.Lock()
	defer c.pool.mu.Unlock()
	if np := c.pool.nodes[n]; np != nil {
		return len(np.ready)
	}
	return 0
}

// TestPoolStale: a ready connection the far side closed (it waits for a
// header only so long) is replaced by a fresh one, unseen by the caller.
func TestPoolStale(t *testing.T) {
	i := newIDs(t)
	node, gate, rej := startGated(t, i, &Server{Dialer: &localDialer{}, HeaderTimeout: 50 * time.Millisecond})
	dst, got := app(t)
	cl := &Client{TLS: i.n1.ClientConfig, Warm: 1}
	defer cl.Close()
	cl.Prewarm([]Node{node})
	testenv.Eventually(t, 10*time.Second, func() error {
		if gate.accepted.Load() < 1 {
			return errors.New("not prewarmed yet")
		}
		return nil
	})
	// The server gives up on the ready connection: not a failure.
	if r := <-rej; r.reason != "" || r.err.(*RejectError).Stage != StageIdle {
		t.Fatalf("server: %q (%v), want an idle close", r.reason, r.err)
	}
	c, err := cl.Dial(ctxT(t), node, Header{Dst: dst})
	if err != nil {
		t.Fatalf("dial after the ready connection went stale: %v", err)
	}
	c.CloseWrite()
	<-got
	c.Close()
}

// TestPoolMaxIdle: ready connections are not kept past MaxIdle.
func TestPoolMaxIdle(t *testing.T) {
	i := newIDs(t)
	node, gate, _ := startGated(t, i, &Server{Dialer: &localDialer{}})
	cl := &Client{TLS: i.n1.ClientConfig, Warm: 1, MaxIdle: time.Nanosecond}
	defer cl.Close()
	cl.Prewarm([]Node{node})
	testenv.Eventually(t, 10*time.Second, func() error {
		if cl.ready(node) < 1 {
			return errors.New("not prewarmed yet")
		}
		return nil
	})
	gate.close()
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	if c, err := cl.Dial(ctx, node, Header{Dst: netip.MustParseAddrPort("127.0.0.1:9")}); err == nil || !errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, context.Canceled) {
		if c != nil {
			c.Close()
		}
		t.Fatalf("dial used a connection older than MaxIdle: %v", err)
	}
}
