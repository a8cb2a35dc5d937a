package tunnel

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/meshless/meshless/daemon/identity"
	"github.com/meshless/meshless/daemon/metrics"
	"github.com/meshless/meshless/daemon/relay"
	"github.com/meshless/meshless/internal/idtest"
)

type rejection struct {
	reason string
	err    error
}

// ids are the test's node identities: the server is n2, clients are n1.
type ids struct {
	ca     *idtest.CA
	n1, n2 *identity.Source
}

func newIDs(t *testing.T) *ids { return newIDsTB(t) }

func newIDsTB(t testing.TB) *ids {
	ca := idtest.NewCA(t)
	return &ids{ca: ca, n1: ca.Source(t, "n1"), n2: ca.Source(t, "n2")}
}

// client is n1's tunnel client without ready connections (the pool's
// tests turn them on).
func (i *ids) client() *Client { return &Client{TLS: i.n1.ClientConfig, Warm: -1} }

// dial is the tunnel to node for dst on behalf of src, from n1.
func (i *ids) dial(ctx context.Context, node Node, src, dst netip.AddrPort) (*tls.Conn, error) {
	return i.client().Dial(ctx, node, Header{Src: src, Dst: dst})
}

// startServer serves s as n2 (unless s.TLS is set) on a loopback port
// until the test ends and returns the node and the rejections it reports.
func startServer(t *testing.T, i *ids, s *Server) (Node, <-chan rejection) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	rej := make(chan rejection, 16)
	s.OnReject = func(e *RejectError) { rej <- rejection{e.Reason(), e} }
	if s.Relay == nil {
		s.Relay = testRelay
	}
	if s.TLS == nil {
		s.TLS = i.n2.ServerConfig()
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return Node{Name: "n2", Addr: ln.Addr().(*net.TCPAddr).AddrPort()}, rej
}

// testRelay relays the way the daemon does.
func testRelay(c *tls.Conn, target net.Conn, _ string, _ Header) {
	tc, _ := relay.AsConn(target)
	relay.Run(context.Background(), c, tc, relay.Options{})
}

// localDialer dials dst on loopback and records what it was asked.
type localDialer struct {
	mu    sync.Mutex
	srcs  []netip.AddrPort
	dsts  []netip.AddrPort
	peers []string
}

func (d *localDialer) DialTarget(ctx context.Context, peer string, h Header) (net.Conn, error) {
	src, dst := h.Src, h.Dst
	d.mu.Lock()
	d.srcs = append(d.srcs, src)
	d.dsts = append(d.dsts, dst)
	d.peers = append(d.peers, peer)
	d.mu.Unlock()
	var nd net.Dialer
	c, err := nd.DialContext(ctx, "tcp", dst.String())
	if err != nil {
		return nil, err
	}
	return c, nil
}

// app is a one-connection application: it reads everything until the
// client half-closes, answers with what it read, then closes.
func app(t *testing.T) (netip.AddrPort, <-chan string) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	got := make(chan string, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		b, err := io.ReadAll(c)
		if err != nil {
			got <- "error: " + err.Error()
			return
		}
		got <- string(b)
		fmt.Fprintf(c, "got %d bytes", len(b))
	}()
	return ln.Addr().(*net.TCPAddr).AddrPort(), got
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func TestTunnelRoundTrip(t *testing.T) {
	i := newIDs(t)
	d := &localDialer{}
	connected := make(chan Header, 1)
	peers := make(chan string, 1)
	node, rej := startServer(t, i, &Server{Dialer: d, Relay: func(c *tls.Conn, target net.Conn, peer string, h Header) {
		connected <- h
		peers <- peer
		testRelay(c, target, peer, h)
	}})
	dst, got := app(t)
	src := ap("198.19.1.5:40000")

	c, err := i.dial(ctxT(t), node, src, dst)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if h := <-connected; h.Dst != dst || h.Src != src {
		t.Errorf("Relay got header %+v", h)
	}
	if p := <-peers; p != "n1" {
		t.Errorf("Relay got peer %q, want n1 (the client's certificate)", p)
	}
	payload := bytes.Repeat([]byte("meshless "), 100000)
	go func() {
		c.Write(payload)
		c.CloseWrite() // half-close: the app sees EOF and still answers
	}()
	answer, err := io.ReadAll(c)
	if err != nil {
		t.Fatal(err)
	}
	if s := <-got; s != string(payload) {
		t.Errorf("app got %d bytes, want %d", len(s), len(payload))
	}
	if want := fmt.Sprintf("got %d bytes", len(payload)); string(answer) != want {
		t.Errorf("answer %q, want %q", answer, want)
	}
	if d.srcs[0] != src || d.dsts[0] != dst || d.peers[0] != "n1" {
		t.Errorf("dialer asked src=%v dst=%v peer=%v", d.srcs, d.dsts, d.peers)
	}
	select {
	case r := <-rej:
		t.Errorf("unexpected rejection %v: %v", r.reason, r.err)
	default:
	}
}

// TestTunnelOKOnlyAfterTarget checks that Dial returns only once the far
// side has connected to the application.
func TestTunnelOKOnlyAfterTarget(t *testing.T) {
	i := newIDs(t)
	entered := make(chan struct{})
	release := make(chan struct{})
	inner := &localDialer{}
	node, _ := startServer(t, i, &Server{Dialer: DialerFunc(func(ctx context.Context, peer string, h Header) (net.Conn, error) {
		close(entered)
		<-release
		return inner.DialTarget(ctx, peer, h)
	})})
	dst, got := app(t)
	type result struct {
		c   *tls.Conn
		err error
	}
	res := make(chan result, 1)
	go func() {
		c, err := i.dial(ctxT(t), node, netip.AddrPort{}, dst)
		res <- result{c, err}
	}()
	<-entered
	select {
	case r := <-res:
		t.Fatalf("Dial returned before the target was dialed: %v", r.err)
	default:
	}
	close(release)
	r := <-res
	if r.err != nil {
		t.Fatal(r.err)
	}
	r.c.CloseWrite()
	if s := <-got; s != "" {
		t.Errorf("app got %q before any write", s)
	}
	r.c.Close()
}

// refusal is an error that names its own reason, as the daemon's
// decisions do.
type refusal struct{ reason string }

func (r refusal) Error() string         { return "refused: " + r.reason }
func (r refusal) FailureReason() string { return r.reason }

func TestTunnelDialFailures(t *testing.T) {
	i := newIDs(t)
	closed, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	refusedAddr := closed.Addr().(*net.TCPAddr).AddrPort()
	closed.Close()

	tests := []struct {
		name   string
		dial   DialerFunc
		status Status
		reason string
	}{
		{"refused", func(ctx context.Context, peer string, h Header) (net.Conn, error) {
			return (&localDialer{}).DialTarget(ctx, peer, Header{Src: h.Src, Dst: refusedAddr})
		}, StatusRefused, metrics.ReasonRefused},
		{"forbidden", func(ctx context.Context, peer string, h Header) (net.Conn, error) {
			return nil, fmt.Errorf("pod %s: %w", h.Dst, ErrForbidden)
		}, StatusForbidden, metrics.ReasonForbidden},
		{"forbidden with its own reason", func(ctx context.Context, peer string, h Header) (net.Conn, error) {
			return nil, fmt.Errorf("%w: %w", ErrForbidden, refusal{"denied"})
		}, StatusForbidden, "denied"},
		{"unreachable", func(ctx context.Context, peer string, h Header) (net.Conn, error) {
			return nil, &net.OpError{Op: "dial", Err: syscall.EHOSTUNREACH}
		}, StatusUnreachable, metrics.ReasonUnreachable},
		{"timeout", func(ctx context.Context, peer string, h Header) (net.Conn, error) {
			<-ctx.Done()
			return nil, ctx.Err()
		}, StatusUnreachable, metrics.ReasonUnreachable},
		{"other", func(ctx context.Context, peer string, h Header) (net.Conn, error) {
			return nil, errors.New("no such netns")
		}, StatusFailed, metrics.ReasonDialFailed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			node, rej := startServer(t, i, &Server{Dialer: tt.dial, DialTimeout: 50 * time.Millisecond})
			c, err := i.dial(ctxT(t), node, netip.AddrPort{}, ap("127.0.0.1:9"))
			var se *StatusError
			if !errors.As(err, &se) || se.Status != tt.status {
				if c != nil {
					c.Close()
				}
				t.Fatalf("Dial: %v, want status %v", err, tt.status)
			}
			if c != nil {
				t.Error("connection returned with an error")
			}
			if r := <-rej; r.reason != tt.reason {
				t.Errorf("reason %v (%v), want %v", r.reason, r.err, tt.reason)
			}
		})
	}
}

// tlsConn is a raw TLS connection from n1 to node, for sending bad
// headers by hand.
func (i *ids) tlsConn(t *testing.T, node Node) *tls.Conn {
	t.Helper()
	c, err := tls.Dial("tcp", node.Addr.String(), i.n1.ClientConfig(node.Name))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestServerRejectsHeaders sends bad requests inside an authenticated TLS
// connection: each is closed, answered with a status where the version is
// understood, and counted.
func TestServerRejectsHeaders(t *testing.T) {
	i := newIDs(t)
	good, _ := Header{Dst: ap("127.0.0.1:9")}.MarshalBinary()
	tests := []struct {
		name   string
		send   []byte
		close  bool   // half-close after sending
		reply  []byte // expected reply before EOF, nil for none
		reason string
	}{
		{"http request", []byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"), false, nil, metrics.ReasonBadMagic},
		{"version 1", hdr(1, 0, -1, cat(dstV4, noSrc)...), false, []byte{'M', 'L', Version, byte(StatusBadVersion)}, metrics.ReasonBadVersion},
		{"version 3", hdr(3, 0, -1, cat(dstV4, noSrc)...), false, []byte{'M', 'L', Version, byte(StatusBadVersion)}, metrics.ReasonBadVersion},
		{"unknown flags", hdr(Version, 0x80, -1, cat(dstV4, noSrc)...), false, []byte{'M', 'L', Version, byte(StatusMalformed)}, metrics.ReasonMalformed},
		{"bad family", hdr(Version, 0, -1, cat([]byte{7, 1, 2, 3, 4, 0, 80}, noSrc)...), false, []byte{'M', 'L', Version, byte(StatusMalformed)}, metrics.ReasonMalformed},
		{"oversized", hdr(Version, 0, 60000), false, []byte{'M', 'L', Version, byte(StatusMalformed)}, metrics.ReasonTooLong},
		{"closed mid-header", good[:10], true, nil, metrics.ReasonHeaderRead},
		{"slow header", good[:10], false, nil, metrics.ReasonHeaderTimeout},
		{"nothing at all", nil, false, nil, ""},
		{"nothing, then closed", nil, true, nil, ""},
	}
	dialed := make(chan netip.AddrPort, 16)
	s := &Server{
		HeaderTimeout: 200 * time.Millisecond,
		Dialer: DialerFunc(func(ctx context.Context, peer string, h Header) (net.Conn, error) {
			dialed <- h.Dst
			return nil, errors.New("must not be called")
		}),
	}
	node, rej := startServer(t, i, s)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := i.tlsConn(t, node)
			defer c.Close()
			c.SetDeadline(time.Now().Add(10 * time.Second))
			if _, err := c.Write(tt.send); err != nil {
				t.Fatal(err)
			}
			if tt.close {
				c.CloseWrite()
			}
			got, err := io.ReadAll(c)
			if err != nil && !errors.Is(err, syscall.ECONNRESET) {
				t.Fatalf("read: %v", err)
			}
			if !bytes.Equal(got, tt.reply) {
				t.Errorf("reply % x, want % x", got, tt.reply)
			}
			r := <-rej
			if r.reason != tt.reason {
				t.Errorf("reason %v (%v), want %v", r.reason, r.err, tt.reason)
			}
		})
	}
	select {
	case d := <-dialed:
		t.Errorf("dialer called for %v", d)
	default:
	}
}

// TestServerRejectsUnauthenticated: anything but mutual TLS with a node
// certificate of the trust bundle is refused before a header is read,
// counted with its reason, and the daemon stays up: the last case, n1
// with its real certificate, still gets through.
func TestServerRejectsUnauthenticated(t *testing.T) {
	i := newIDs(t)
	// n1's name with a certificate of another CA; it does not judge the
	// server, so the refusal is the server's.
	other := &tls.Config{MinVersion: tls.VersionTLS13, InsecureSkipVerify: true,
		Certificates: []tls.Certificate{idtest.NewCA(t).TLSCertificate(t, "n1")}}
	v1, _ := Header{Dst: ap("127.0.0.1:9")}.MarshalBinary()
	v1[4] = 1 // the plaintext header of version 1
	d := &localDialer{}
	node, rej := startServer(t, i, &Server{Dialer: d})
	dst, got := app(t)
	noCert := &tls.Config{MinVersion: tls.VersionTLS13, InsecureSkipVerify: true}
	tests := []struct {
		name   string
		client func() (net.Conn, error)
		reason string
	}{
		{"plaintext version 1 header", func() (net.Conn, error) {
			c, err := net.Dial("tcp", node.Addr.String())
			if err == nil {
				_, err = c.Write(v1)
			}
			return c, err
		}, identity.ReasonPlaintext},
		{"another CA", func() (net.Conn, error) { return tls.Dial("tcp", node.Addr.String(), other) }, identity.ReasonUntrusted},
		{"no client certificate", func() (net.Conn, error) { return tls.Dial("tcp", node.Addr.String(), noCert) }, identity.ReasonNoCert},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if c, err := tt.client(); err == nil {
				// A refused TLS 1.3 client learns it on its first read.
				c.SetDeadline(time.Now().Add(10 * time.Second))
				io.ReadAll(c)
				c.Close()
			}
			r := <-rej
			if r.reason != tt.reason {
				t.Errorf("reason %v (%v), want %v", r.reason, r.err, tt.reason)
			}
		})
	}
	c, err := i.dial(ctxT(t), node, netip.AddrPort{}, dst)
	if err != nil {
		t.Fatalf("n1 after the refusals: %v", err)
	}
	c.CloseWrite()
	<-got
	c.Close()
	if len(d.dsts) != 1 {
		t.Errorf("dialer called %d times, want once (only for n1)", len(d.dsts))
	}
}

// TestClientRefusesWrongNode: a server whose certificate is of another
// node than the route says is refused by the client before it sends a
// header.
func TestClientRefusesWrongNode(t *testing.T) {
	i := newIDs(t)
	d := &localDialer{}
	node, rej := startServer(t, i, &Server{Dialer: d})
	_, err := i.dial(ctxT(t), Node{Name: "n3", Addr: node.Addr}, netip.AddrPort{}, ap("127.0.0.1:9"))
	if !errors.Is(err, identity.ErrWrongPeer) {
		t.Errorf("dial n3 at n2's address: %v, want ErrWrongPeer", err)
	}
	if r := <-rej; r.reason != identity.ReasonPeerRefused {
		t.Errorf("server saw %v (%v), want %s", r.reason, r.err, identity.ReasonPeerRefused)
	}
	if len(d.dsts) != 0 {
		t.Errorf("dialer called for %v", d.dsts)
	}
}

// TestClientAgainstWrongServer: a TLS server of n2 that is not a tunnel.
func TestClientAgainstWrongServer(t *testing.T) {
	i := newIDs(t)
	ln, err := tls.Listen("tcp", "127.0.0.1:0", i.n2.ServerConfig())
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	node := Node{Name: "n2", Addr: ln.Addr().(*net.TCPAddr).AddrPort()}
	answers := []string{"HTTP/1.1 400 Bad Request\r\n\r\n", ""}
	go func() {
		for _, a := range answers {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			io.ReadFull(c, make([]byte, 16))
			c.Write([]byte(a))
			c.Close()
		}
	}()
	for n, want := range []string{"not a tunnel server", "server closed the connection"} {
		c, err := i.dial(ctxT(t), node, netip.AddrPort{}, ap("10.0.0.1:80"))
		if err == nil || !strings.Contains(err.Error(), want) {
			if c != nil {
				c.Close()
			}
			t.Errorf("answer %d: err %v, want %q", n, err, want)
		}
	}
}

// TestClientCancel: a server that never answers does not hold Dial past
// its context, deadline or cancellation.
func TestClientCancel(t *testing.T) {
	i := newIDs(t)
	release := make(chan struct{})
	defer close(release)
	// The server handshakes, then never answers the header.
	node, _ := startServer(t, i, &Server{Dialer: DialerFunc(func(ctx context.Context, peer string, h Header) (net.Conn, error) {
		<-release
		return nil, errors.New("released")
	})})
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if _, err := i.dial(ctx, node, netip.AddrPort{}, ap("10.0.0.1:80")); !errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Errorf("deadline: %v", err)
	}

	ctx, cancel = context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() {
		_, err := i.dial(ctx, node, netip.AddrPort{}, ap("10.0.0.1:80"))
		errc <- err
	}()
	cancel()
	select {
	case err := <-errc:
		if !errors.Is(err, context.Canceled) {
			t.Errorf("cancel: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Dial ignored cancellation")
	}
}

// TestServeShutdown: cancelling Serve's context closes live tunnels.
func TestServeShutdown(t *testing.T) {
	i := newIDs(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	appLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer appLn.Close()
	appConn := make(chan net.Conn, 1)
	go func() {
		c, err := appLn.Accept()
		if err == nil {
			appConn <- c
		}
	}()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- (&Server{TLS: i.n2.ServerConfig(), Dialer: &localDialer{}, Relay: testRelay}).Serve(ctx, ln)
	}()

	node := Node{Name: "n2", Addr: ln.Addr().(*net.TCPAddr).AddrPort()}
	c, err := i.dial(ctxT(t), node, netip.AddrPort{}, appLn.Addr().(*net.TCPAddr).AddrPort())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	a := <-appConn
	defer a.Close()
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Serve did not return")
	}
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if n, err := c.Read(make([]byte, 1)); err == nil {
		t.Errorf("tunnel still open after shutdown (read %d)", n)
	}
	a.SetReadDeadline(time.Now().Add(10 * time.Second))
	if n, err := a.Read(make([]byte, 1)); err == nil {
		t.Errorf("target still open after shutdown (read %d)", n)
	}
	if _, err := net.Dial("tcp", ln.Addr().String()); err == nil {
		t.Error("listener still open")
	}
}
