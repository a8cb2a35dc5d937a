package tunnel

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"syscall"
	"time"

	"github.com/meshless/meshless/daemon/metrics"
)

// Dialer connects the server to the application a tunnel targets. The
// daemon implements it by dialing inside the destination pod's netns, with
// src as the source address when it can.
type Dialer interface {
	// DialTarget connects to h.Dst on behalf of the client pod h.Src (the
	// zero AddrPort when the client sent none). It returns an error
	// wrapping ErrForbidden when h.Dst is not served by this node. The
	// connection is TCP or, for a pod serving a unix socket, unix; either
	// way it must support CloseWrite (relay.Conn).
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

// RejectError is what Server.OnReject receives: a tunnel connection dropped
// before its bytes were relayed, at which stage, and the status the client
// was sent (StatusOK when it was sent none).
type RejectError struct {
	// Stage is "header", "dial" or "reply".
	Stage string
	// Header is the request, when it was read.
	Header Header
	// Status is what the client was told; StatusOK when nothing was sent.
	Status Status
	// Err is the cause: a header error (ErrBadMagic, ErrBadVersion,
	// ErrTooLong, ErrMalformed, os.ErrDeadlineExceeded, a read error), the
	// Dialer's error, or the write error of the reply.
	Err error
}

// Error returns "tunnel <stage>: <cause>".
func (e *RejectError) Error() string { return "tunnel " + e.Stage + ": " + e.Err.Error() }

// Unwrap returns the cause.
func (e *RejectError) Unwrap() error { return e.Err }

// Reason returns the meshless_connection_failures_total label of the
// rejection.
func (e *RejectError) Reason() string {
	switch e.Stage {
	case "reply":
		return metrics.ReasonReply
	case "dial":
		switch e.Status {
		case StatusForbidden:
			return metrics.ReasonForbidden
		case StatusRefused:
			return metrics.ReasonRefused
		case StatusUnreachable:
			return metrics.ReasonUnreachable
		}
		return metrics.ReasonDialFailed
	}
	switch {
	case errors.Is(e.Err, ErrBadMagic):
		return metrics.ReasonBadMagic
	case errors.Is(e.Err, ErrBadVersion):
		return metrics.ReasonBadVersion
	case errors.Is(e.Err, ErrTooLong):
		return metrics.ReasonTooLong
	case errors.Is(e.Err, ErrMalformed):
		return metrics.ReasonMalformed
	case errors.Is(e.Err, os.ErrDeadlineExceeded):
		return metrics.ReasonHeaderTimeout
	}
	return metrics.ReasonHeaderRead
}

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
	// its bytes were relayed, with a *RejectError. It must be safe for
	// concurrent use.
	OnReject func(err *RejectError)
	// Relay carries the bytes between the client connection and the
	// target connection once the client was told OK, both ways with
	// half-close, and closes both when done (package relay). Required.
	Relay func(client *net.TCPConn, target net.Conn, h Header)
}

// Serve accepts tunnel connections on ln until ctx is done or ln fails.
// When ctx is done it closes ln and every connection it serves, waits for
// their handlers to return, and returns nil.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	if s.Dialer == nil || s.Relay == nil {
		return errors.New("tunnel: Server.Dialer and Server.Relay are required")
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

	ht := s.HeaderTimeout
	if ht <= 0 {
		ht = DefaultHeaderTimeout
	}
	c.SetDeadline(time.Now().Add(ht))
	h, err := ReadHeader(c)
	if err != nil {
		st := StatusOK
		switch {
		case errors.Is(err, ErrBadVersion):
			st = StatusBadVersion
		case errors.Is(err, ErrMalformed), errors.Is(err, ErrTooLong):
			st = StatusMalformed
		}
		if st != StatusOK {
			s.writeStatus(c, st)
		}
		c.Close()
		s.reject(&RejectError{Stage: "header", Status: st, Err: err})
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
		st := dialStatus(err)
		s.writeStatus(c, st)
		c.Close()
		s.reject(&RejectError{Stage: "dial", Header: h, Status: st, Err: fmt.Errorf("dial %s: %w", h.Dst, err)})
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
		s.reject(&RejectError{Stage: "reply", Header: h, Err: fmt.Errorf("write reply: %w", err)})
		return
	}
	c.SetDeadline(time.Time{})
	s.Relay(c, t, h)
}

func (s *Server) writeStatus(c *net.TCPConn, st Status) {
	c.SetWriteDeadline(time.Now().Add(time.Second))
	r := reply(st)
	c.Write(r[:]) // best effort: the connection is closed next anyway
}

func (s *Server) reject(err *RejectError) {
	if s.OnReject != nil {
		s.OnReject(err)
	}
}

// dialStatus is the status a Dialer's error is reported with.
func dialStatus(err error) Status {
	var ne net.Error
	switch {
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
