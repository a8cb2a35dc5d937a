package tunnel

import (
	"bytes"
	"context"
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

	"github.com/meshless/meshless/daemon/metrics"
	"github.com/meshless/meshless/daemon/relay"
)

type rejection struct {
	reason string
	err    error
}

// startServer serves s on a loopback port until the test ends and returns
// the address and the rejections it reports.
func startServer(t *testing.T, s *Server) (netip.AddrPort, <-chan rejection) {
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
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return ln.Addr().(*net.TCPAddr).AddrPort(), rej
}

// testRelay relays the way the daemon does.
func testRelay(c *net.TCPConn, target net.Conn, _ Header) {
	tc, _ := relay.AsConn(target)
	relay.Run(context.Background(), c, tc, relay.Options{})
}

// localDialer dials dst on loopback and records what it was asked.
type localDialer struct {
	mu   sync.Mutex
	srcs []netip.AddrPort
	dsts []netip.AddrPort
}

func (d *localDialer) DialTarget(ctx context.Context, h Header) (net.Conn, error) {
	src, dst := h.Src, h.Dst
	d.mu.Lock()
	d.srcs = append(d.srcs, src)
	d.dsts = append(d.dsts, dst)
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
	d := &localDialer{}
	connected := make(chan Header, 1)
	node, rej := startServer(t, &Server{Dialer: d, Relay: func(c *net.TCPConn, target net.Conn, h Header) {
		connected <- h
		tc, _ := relay.AsConn(target)
		relay.Run(context.Background(), c, tc, relay.Options{})
	}})
	dst, got := app(t)
	src := ap("198.19.1.5:40000")

	c, err := Dial(ctxT(t), node, src, dst)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if h := <-connected; h.Dst != dst || h.Src != src {
		t.Errorf("Relay got header %+v", h)
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
	if d.srcs[0] != src || d.dsts[0] != dst {
		t.Errorf("dialer asked src=%v dst=%v", d.srcs, d.dsts)
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
	entered := make(chan struct{})
	release := make(chan struct{})
	inner := &localDialer{}
	node, _ := startServer(t, &Server{Dialer: DialerFunc(func(ctx context.Context, h Header) (net.Conn, error) {
		close(entered)
		<-release
		return inner.DialTarget(ctx, h)
	})})
	dst, got := app(t)
	type result struct {
		c   *net.TCPConn
		err error
	}
	res := make(chan result, 1)
	go func() {
		c, err := Dial(ctxT(t), node, netip.AddrPort{}, dst)
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

func TestTunnelDialFailures(t *testing.T) {
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
		{"refused", func(ctx context.Context, h Header) (net.Conn, error) {
			return (&localDialer{}).DialTarget(ctx, Header{Src: h.Src, Dst: refusedAddr})
		}, StatusRefused, metrics.ReasonRefused},
		{"forbidden", func(ctx context.Context, h Header) (net.Conn, error) {
			return nil, fmt.Errorf("pod %s: %w", h.Dst, ErrForbidden)
		}, StatusForbidden, metrics.ReasonForbidden},
		{"unreachable", func(ctx context.Context, h Header) (net.Conn, error) {
			return nil, &net.OpError{Op: "dial", Err: syscall.EHOSTUNREACH}
		}, StatusUnreachable, metrics.ReasonUnreachable},
		{"timeout", func(ctx context.Context, h Header) (net.Conn, error) {
			<-ctx.Done()
			return nil, ctx.Err()
		}, StatusUnreachable, metrics.ReasonUnreachable},
		{"other", func(ctx context.Context, h Header) (net.Conn, error) {
			return nil, errors.New("no such netns")
		}, StatusFailed, metrics.ReasonDialFailed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			node, rej := startServer(t, &Server{Dialer: tt.dial, DialTimeout: 50 * time.Millisecond})
			c, err := Dial(ctxT(t), node, netip.AddrPort{}, ap("127.0.0.1:9"))
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

// TestServerRejects sends bad requests on raw connections: each is closed,
// answered with a status where the version is understood, and counted.
func TestServerRejects(t *testing.T) {
	good, _ := Header{Dst: ap("127.0.0.1:9")}.MarshalBinary()
	tests := []struct {
		name   string
		send   []byte
		close  bool   // half-close after sending
		reply  []byte // expected reply before EOF, nil for none
		reason string
	}{
		{"http request", []byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"), false, nil, metrics.ReasonBadMagic},
		{"tls hello", []byte{0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc}, false, nil, metrics.ReasonBadMagic},
		{"version 2", hdr(2, 0, -1, cat(dstV4, noSrc)...), false, []byte{'M', 'L', Version, byte(StatusBadVersion)}, metrics.ReasonBadVersion},
		{"unknown flags", hdr(1, 0x80, -1, cat(dstV4, noSrc)...), false, []byte{'M', 'L', Version, byte(StatusMalformed)}, metrics.ReasonMalformed},
		{"bad family", hdr(1, 0, -1, cat([]byte{7, 1, 2, 3, 4, 0, 80}, noSrc)...), false, []byte{'M', 'L', Version, byte(StatusMalformed)}, metrics.ReasonMalformed},
		{"oversized", hdr(1, 0, 60000), false, []byte{'M', 'L', Version, byte(StatusMalformed)}, metrics.ReasonTooLong},
		{"closed mid-header", good[:10], true, nil, metrics.ReasonHeaderRead},
		{"slow header", good[:10], false, nil, metrics.ReasonHeaderTimeout},
		{"nothing at all", nil, false, nil, metrics.ReasonHeaderTimeout},
	}
	dialed := make(chan netip.AddrPort, 16)
	s := &Server{
		HeaderTimeout: 200 * time.Millisecond,
		Dialer: DialerFunc(func(ctx context.Context, h Header) (net.Conn, error) {
			dialed <- h.Dst
			return nil, errors.New("must not be called")
		}),
	}
	node, rej := startServer(t, s)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := net.Dial("tcp", node.String())
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(10 * time.Second))
			if _, err := c.Write(tt.send); err != nil {
				t.Fatal(err)
			}
			if tt.close {
				c.(*net.TCPConn).CloseWrite()
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

func TestClientAgainstWrongServer(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	addr := ln.Addr().(*net.TCPAddr).AddrPort()
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
	for i, want := range []string{"not a tunnel server", "server closed the connection"} {
		c, err := Dial(ctxT(t), addr, netip.AddrPort{}, ap("10.0.0.1:80"))
		if err == nil || !strings.Contains(err.Error(), want) {
			if c != nil {
				c.Close()
			}
			t.Errorf("answer %d: err %v, want %q", i, err, want)
		}
	}
}

// TestClientCancel: a server that never answers does not hold Dial past
// its context, deadline or cancellation.
func TestClientCancel(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	acceptDone := make(chan struct{})
	defer func() { ln.Close(); <-acceptDone }()
	go func() {
		// Accept and hold every connection, never answering.
		defer close(acceptDone)
		var held []net.Conn
		for {
			c, err := ln.Accept()
			if err != nil {
				for _, c := range held {
					c.Close()
				}
				return
			}
			held = append(held, c)
		}
	}()
	addr := ln.Addr().(*net.TCPAddr).AddrPort()

	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if _, err := Dial(ctx, addr, netip.AddrPort{}, ap("10.0.0.1:80")); !errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Errorf("deadline: %v", err)
	}

	ctx, cancel = context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() {
		_, err := Dial(ctx, addr, netip.AddrPort{}, ap("10.0.0.1:80"))
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
	go func() { done <- (&Server{Dialer: &localDialer{}, Relay: testRelay}).Serve(ctx, ln) }()

	c, err := Dial(ctxT(t), ln.Addr().(*net.TCPAddr).AddrPort(), netip.AddrPort{}, appLn.Addr().(*net.TCPAddr).AddrPort())
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
