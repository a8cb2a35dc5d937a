package tunnel

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"syscall"
	"time"
)

// Dialer connects the server to the application a tunnel targets. The
// daemon implements it by dialing inside the destination pod's netns, with
// src as the source address when it can.
type Dialer interface {
	// DialTarget connects to h.Dst on behalf of the client pod h.Src (the
	// zero AddrPort when the client sent none). It returns an error
	// wrapping ErrForbidden when h.Dst is not served by this node. The
	// connection is TCP or, for a pod serving a unix socket, unix; either
	// way it must support CloseWrite (see pump.Conn).
	DialTarget(ctx context.Context, h Header) (net.Conn, error)
}

// DialerFunc adapts a function to the Dialer interface.
type DialerFunc func(ctx context.Context, h Header) (net.Conn, error)

// DialTarget calls f.
func (f DialerFunc) DialTarget(ctx context.Context, h Header) (net.Conn, error) {
	return f(ctx, h)
}

// ErrForbidden is what a Dialer wraps to refuse a destination this node
// does not serve; the client receives StatusForbidden.
var ErrForbidden = errors.New("destination not served by this node")

// Reason says why the server dropped a tunnel connection before piping; it
// is meant as a metrics label.
type Reason string

// Reasons for Server.OnReject.
const (
	// ReasonBadMagic: the first bytes were not the magic.
	ReasonBadMagic Reason = "bad_magic"
	// ReasonBadVersion: a version this server does not speak.
	ReasonBadVersion Reason = "bad_version"
	// ReasonMalformed: the header was malformed.
	ReasonMalformed Reason = "malformed_header"
	// ReasonTooLong: the announced header length exceeded MaxHeaderLen.
	ReasonTooLong Reason = "header_too_long"
	// ReasonTimeout: the header did not arrive within HeaderTimeout.
	ReasonTimeout Reason = "header_timeout"
	// ReasonRead: the connection failed or closed before a whole header.
	ReasonRead Reason = "header_read"
	// ReasonDialRefused: the application refused the connection.
	ReasonDialRefused Reason = "dial_refused"
	// ReasonDialUnreachable: the application was unreachable or timed out.
	ReasonDialUnreachable Reason = "dial_unreachable"
	// ReasonDialForbidden: the Dialer refused the destination.
	ReasonDialForbidden Reason = "dial_forbidden"
	// ReasonDialFailed: any other dial failure.
	ReasonDialFailed Reason = "dial_failed"
	// ReasonReply: the OK reply could not be written.
	ReasonReply Reason = "reply_write"
)

// Default timeouts of a Server.
const (
	// DefaultHeaderTimeout bounds the arrival of a request header.
	DefaultHeaderTimeout = 5 * time.Second
	// DefaultDialTimeout bounds the connection to the application.
	DefaultDialTimeout = 10 * time.Second
)

// Server is the tunnel's server side, on the node's tunnel port.
type Server struct {
	// Dialer connects to the applications. Required.
	Dialer Dialer
	// HeaderTimeout bounds the time from accept to a complete header, and
	// the writing of the reply; DefaultHeaderTimeout when zero.
	HeaderTimeout time.Duration
	// DialTimeout bounds DialTarget; DefaultDialTimeout when zero.
	DialTimeout time.Duration
	// OnReject, when set, is called for every connection dropped before
	// piping, with the reason and the error. It must be safe for
	// concurrent use.
	OnReject func(reason Reason, err error)
	// OnConnect, when set, is called for every tunnel whose target
	// connection was established, before piping.
	OnConnect func(h Header)
	// Pipe, when set, carries the bytes between the client connection and
	// the target connection, both ways with half-close, and closes both
	// when done. The default is a minimal copy loop (to be replaced by
	// daemon/pump).
	Pipe func(client *net.TCPConn, target net.Conn)
}

// Serve accepts tunnel connections on ln until ctx is done or ln fails.
// When ctx is done it closes ln and every connection it serves, waits for
// their handlers to return, and returns nil.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
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

	ht := s.HeaderTimeout
	if ht <= 0 {
		ht = DefaultHeaderTimeout
	}
	c.SetDeadline(time.Now().Add(ht))
	h, err := ReadHeader(c)
	if err != nil {
		reason := headerReason(err)
		switch reason {
		case ReasonBadVersion:
			s.writeStatus(c, StatusBadVersion)
		case ReasonMalformed, ReasonTooLong:
			s.writeStatus(c, StatusMalformed)
		}
		c.Close()
		s.reject(reason, err)
		return
	}

	c.SetDeadline(time.Time{})

	dt := s.DialTimeout
	if dt <= 0 {
		dt = DefaultDialTimeout
	}
	dctx, cancel := context.WithTimeout(ctx, dt)
	t, err := s.Dialer.DialTarget(dctx, h)
	cancel()
	if err != nil {
		st, reason := dialStatus(err)
		s.writeStatus(c, st)
		c.Close()
		s.reject(reason, fmt.Errorf("dial %s: %w", h.Dst, err))
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

	c.SetWriteDeadline(time.Now().Add(ht))
	r := reply(StatusOK)
	if _, err := c.Write(r[:]); err != nil {
		c.Close()
		t.Close()
		s.reject(ReasonReply, fmt.Errorf("write reply: %w", err))
		return
	}
	c.SetDeadline(time.Time{})
	if s.OnConnect != nil {
		s.OnConnect(h)
	}
	if s.Pipe != nil {
		s.Pipe(c, t)
	} else {
		pipe(c, t)
	}
}

func (s *Server) writeStatus(c *net.TCPConn, st Status) {
	c.SetWriteDeadline(time.Now().Add(time.Second))
	r := reply(st)
	c.Write(r[:]) // best effort: the connection is closed next anyway
}

func (s *Server) reject(r Reason, err error) {
	if s.OnReject != nil {
		s.OnReject(r, err)
	}
}

func headerReason(err error) Reason {
	switch {
	case errors.Is(err, ErrBadMagic):
		return ReasonBadMagic
	case errors.Is(err, ErrBadVersion):
		return ReasonBadVersion
	case errors.Is(err, ErrTooLong):
		return ReasonTooLong
	case errors.Is(err, ErrMalformed):
		return ReasonMalformed
	case errors.Is(err, os.ErrDeadlineExceeded):
		return ReasonTimeout
	}
	return ReasonRead
}

func dialStatus(err error) (Status, Reason) {
	var ne net.Error
	switch {
	case errors.Is(err, ErrForbidden):
		return StatusForbidden, ReasonDialForbidden
	case errors.Is(err, syscall.ECONNREFUSED):
		return StatusRefused, ReasonDialRefused
	case errors.Is(err, syscall.ENETUNREACH), errors.Is(err, syscall.EHOSTUNREACH),
		errors.Is(err, context.DeadlineExceeded), errors.Is(err, syscall.ETIMEDOUT),
		errors.As(err, &ne) && ne.Timeout():
		return StatusUnreachable, ReasonDialUnreachable
	}
	return StatusFailed, ReasonDialFailed
}

// pipe copies both ways between a and b, propagating half-closes, and
// closes both when both directions are done or either fails.
// TODO: switch to daemon/pump once it exists (byte counting, metrics).
func pipe(a *net.TCPConn, b net.Conn) {
	errc := make(chan error, 2)
	half := func(dst, src net.Conn) {
		_, err := io.Copy(dst, src)
		if err == nil {
			if cw, ok := dst.(interface{ CloseWrite() error }); ok {
				err = cw.CloseWrite()
			}
		}
		errc <- err
	}
	go half(a, b)
	go half(b, a)
	for i := range 2 {
		if err := <-errc; err != nil {
			// One side failed: abort both, unblocking the other copy.
			a.Close()
			b.Close()
			if i == 0 {
				<-errc
			}
			return
		}
	}
	a.Close()
	b.Close()
}
