package tunnel

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"syscall"
	"time"

	"github.com/meshless/meshless/daemon/identity"
)

// Dialer connects the server to the application a tunnel targets. The
// daemon implements it by deciding (is the source a pod of peer, may it
// call the destination) and dialing inside the destination pod's netns,
// with the source's address when it can.
type Dialer interface {
	// DialTarget connects to h.Dst on behalf of the client pod h.Src (the
	// zero AddrPort when the client sent none) of the node peer, which
	// the TLS handshake authenticated. It returns an error wrapping
	// ErrForbidden when h.Dst is not served by this node or the source may
	// not reach it. The connection is TCP or, for a pod serving a unix
	// socket, unix; either way it must support CloseWrite (relay.Conn).
	DialTarget(ctx context.Context, peer string, h Header) (net.Conn, error)
}

// DialerFunc adapts a function to the Dialer interface.
type DialerFunc func(ctx context.Context, peer string, h Header) (net.Conn, error)

// DialTarget calls f.
func (f DialerFunc) DialTarget(ctx context.Context, peer string, h Header) (net.Conn, error) {
	return f(ctx, peer, h)
}

// ErrForbidden is what a Dialer wraps to refuse a destination this node
// does not serve; the client receives StatusForbidden.
var ErrForbidden = errors.New("destination not served by this node")

// Default timeouts of a Server.
const (
	// DefaultHandshakeTimeout bounds the TLS handshake after accept.
	DefaultHandshakeTimeout = 5 * time.Second
	// DefaultHeaderTimeout bounds the arrival of a request header after
	// the handshake. Clients handshake ahead of need and keep the
	// connection ready (Client's warm pool) for less than this.
	DefaultHeaderTimeout = 90 * time.Second
	// DefaultDialTimeout bounds the connection to the application.
	DefaultDialTimeout = 10 * time.Second
)

// Server is the tunnel's server side, on the node's tunnel port.
type Server struct {
	// TLS is the mutual TLS 1.3 configuration
	// (identity.Source.ServerConfig). Required.
	TLS *tls.Config
	// Dialer connects to the applications. Required.
	Dialer Dialer
	// HandshakeTimeout bounds the TLS handshake;
	// DefaultHandshakeTimeout when zero.
	HandshakeTimeout time.Duration
	// HeaderTimeout bounds the time from the handshake to a complete
	// header, and the writing of the reply; DefaultHeaderTimeout when
	// zero.
	HeaderTimeout time.Duration
	// DialTimeout bounds DialTarget; DefaultDialTimeout when zero.
	DialTimeout time.Duration
	// OnReject, when set, is called for every connection dropped before
	// its bytes were relayed, with a *RejectError. It must be safe for
	// concurrent use.
	OnReject func(err *RejectError)
	// Relay carries the bytes between the client connection and the
	// target connection once the client was told OK, both ways with
	// half-close, and closes both when done (package relay). Required.
	Relay func(client *tls.Conn, target net.Conn, peer string, h Header)
}

// Serve accepts tunnel connections on ln until ctx is done or ln fails.
// When ctx is done it closes ln and every connection it serves, waits for
// their handlers to return, and returns nil.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	if s.TLS == nil || s.Dialer == nil || s.Relay == nil {
		return errors.New("tunnel: Server.TLS, Server.Dialer and Server.Relay are required")
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := context.AfterFunc(ctx, func() { ln.Close() })
	defer stop()
	var wg sync.WaitGroup
	defer wg.Wait()
	var backoff time.Duration
	for {
		c, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			if isTemporary(err) {
				backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
				t := time.NewTimer(backoff)
				select {
				case <-t.C:
				case <-ctx.Done():
					t.Stop()
				}
				continue
			}
			return fmt.Errorf("accept tunnel: %w", err)
		}
		backoff = 0
		tc, ok := c.(*net.TCPConn)
		if !ok {
			c.Close()
			continue
		}
		wg.Go(func() { s.ServeConn(ctx, tc) })
	}
}

func isTemporary(err error) bool {
	return errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.ENFILE) ||
		errors.Is(err, syscall.ENOBUFS) || errors.Is(err, syscall.ENOMEM) ||
		errors.Is(err, syscall.ECONNABORTED)
}

// ServeConn handles one accepted tunnel connection and returns when it is
// over; it closes c. When ctx is done the connection is closed.
func (s *Server) ServeConn(ctx context.Context, c *net.TCPConn) {
	var (
		mu     sync.Mutex
		target net.Conn
		done   bool
	)
	stop := context.AfterFunc(ctx, func() {
		mu.Lock()
		defer mu.Unlock()
		done = true
		c.Close()
		if target != nil {
			target.Close()
		}
	})
	defer stop()
	tc, peer, h, ok := s.accept(ctx, c)
	if !ok {
		return
	}
	dt := orDefault(s.DialTimeout, DefaultDialTimeout)
	dctx, cancel := context.WithTimeout(ctx, dt)
	t, err := s.Dialer.DialTarget(dctx, peer, h)
	cancel()
	if err != nil {
		st := dialStatus(err)
		s.writeStatus(tc, st)
		c.Close()
		s.reject(&RejectError{Stage: StageDial, Peer: peer, Header: h, Status: st, Err: fmt.Errorf("dial %s: %w", h.Dst, err)})
		return
	}
	mu.Lock()
	if done {
		mu.Unlock()
		t.Close()
		return
	}
	target = t
	mu.Unlock()

	tc.SetWriteDeadline(time.Now().Add(orDefault(s.HandshakeTimeout, DefaultHandshakeTimeout)))
	r := reply(StatusOK)
	if _, err := tc.Write(r[:]); err != nil {
		c.Close()
		t.Close()
		s.reject(&RejectError{Stage: StageReply, Peer: peer, Header: h, Err: fmt.Errorf("write reply: %w", err)})
		return
	}
	tc.SetDeadline(time.Time{})
	s.Relay(tc, t, peer, h)
}

// accept runs the TLS handshake and reads the request header: the peer
// node the handshake authenticated and what it asks for. On failure it
// answers where an answer means something, closes c, reports the
// rejection and returns false.
func (s *Server) accept(ctx context.Context, c *net.TCPConn) (*tls.Conn, string, Header, bool) {
	tc := tls.Server(c, s.TLS)
	hctx, cancel := context.WithTimeout(ctx, orDefault(s.HandshakeTimeout, DefaultHandshakeTimeout))
	err := tc.HandshakeContext(hctx)
	cancel()
	var peer string
	if err == nil {
		peer, err = identity.PeerNode(tc.ConnectionState())
	}
	if err != nil {
		c.Close()
		s.reject(&RejectError{Stage: StageTLS, Err: err})
		return nil, "", Header{}, false
	}
	tc.SetDeadline(time.Now().Add(orDefault(s.HeaderTimeout, DefaultHeaderTimeout)))
	cr := &countingReader{r: tc}
	h, err := ReadHeader(cr)
	if err != nil && cr.n == 0 {
		// A ready connection the client handshook ahead of need and
		// closed unused (its pool shrank, it restarted), or left unused
		// until the timeout: not a bad request.
		c.Close()
		s.reject(&RejectError{Stage: StageIdle, Peer: peer, Err: err})
		return nil, "", Header{}, false
	}
	if err != nil {
		st := StatusOK
		switch {
		case errors.Is(err, ErrBadVersion):
			st = StatusBadVersion
		case errors.Is(err, ErrMalformed), errors.Is(err, ErrTooLong):
			st = StatusMalformed
		}
		if st != StatusOK {
			s.writeStatus(tc, st)
		}
		c.Close()
		s.reject(&RejectError{Stage: StageHeader, Peer: peer, Status: st, Err: err})
		return nil, "", Header{}, false
	}
	return tc, peer, h, true
}

// countingReader counts the bytes read through it.
type countingReader struct {
	r io.Reader
	n int
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += n
	return n, err
}

func orDefault(d, def time.Duration) time.Duration {
	if d <= 0 {
		return def
	}
	return d
}

func (s *Server) writeStatus(c *tls.Conn, st Status) {
	c.SetWriteDeadline(time.Now().Add(time.Second))
	r := reply(st)
	c.Write(r[:]) // best effort: the connection is closed next anyway
}

func (s *Server) reject(err *RejectError) {
	if s.OnReject != nil {
		s.OnReject(err)
	}
}

// Errors a Dialer wraps to report a refusal with its own status.
var (
	// ErrDenied: the destination's access control refused the source.
	ErrDenied = errors.New("denied by access policy")
	// ErrFull: the destination is at its connection limit.
	ErrFull = errors.New("destination at its connection limit")
)

// dialStatus is the status a Dialer's error is reported with.
func dialStatus(err error) Status {
	var ne net.Error
	switch {
	case errors.Is(err, ErrDenied):
		return StatusDenied
	case errors.Is(err, ErrFull):
		return StatusFull
	case errors.Is(err, ErrForbidden):
		return StatusForbidden
	case errors.Is(err, syscall.ECONNREFUSED):
		return StatusRefused
	case errors.Is(err, syscall.ENETUNREACH), errors.Is(err, syscall.EHOSTUNREACH),
		errors.Is(err, context.DeadlineExceeded), errors.Is(err, syscall.ETIMEDOUT),
		errors.As(err, &ne) && ne.Timeout():
		return StatusUnreachable
	}
	return StatusFailed
}
