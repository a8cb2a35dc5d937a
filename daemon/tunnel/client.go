package tunnel

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"sync"
	"syscall"
	"time"
)

// Node is a tunnel server: the node's name, which its certificate must
// carry, and the address of its tunnel.
type Node struct {
	Name string
	Addr netip.AddrPort
}

// String returns "name@addr".
func (n Node) String() string { return n.Name + "@" + n.Addr.String() }

// Client dials tunnels. Connections to a node are handshaken ahead of need
// and kept ready (see pool.go), so a new application connection pays one
// round trip to the far daemon (header, then its reply once it reached the
// application) instead of a TCP and a TLS handshake before that.
type Client struct {
	// TLS returns the mutual TLS configuration for dialing node
	// (identity.Source.ClientConfig). Required: the tunnel is TLS only.
	TLS func(node string) *tls.Config
	// Dialer makes the TCP connections; the zero Dialer when nil.
	Dialer *net.Dialer
	// Warm is how many ready connections to keep per node at first;
	// DefaultWarm when zero, none when negative. The pool grows it while
	// connections are asked for faster than it refills.
	Warm int
	// MaxIdle is how long a ready connection is kept before it is closed
	// unused; DefaultMaxIdle when zero. It must stay below the server's
	// HeaderTimeout.
	MaxIdle time.Duration
	// OnDialError, when set, is told of failed background dials (the pool
	// keeps trying, with a pause).
	OnDialError func(n Node, err error)

	once sync.Once
	pool *pool
}

// Defaults of a Client.
const (
	DefaultWarm    = 2
	DefaultMaxIdle = 60 * time.Second
)

func (c *Client) init() {
	c.once.Do(func() {
		warm := c.Warm
		if warm == 0 {
			warm = DefaultWarm
		}
		c.pool = newPool(c.handshake, max(warm, 0), orDefault(c.MaxIdle, DefaultMaxIdle), c.OnDialError)
	})
}

// Dial asks node's daemon to connect to h.Dst on behalf of h.Src. It
// returns only once the far daemon reports that it reached the application;
// the returned connection then carries the application's bytes. A failure
// status is a *StatusError. ctx bounds the whole exchange.
func (c *Client) Dial(ctx context.Context, node Node, h Header) (*tls.Conn, error) {
	hdr, err := h.MarshalBinary()
	if err != nil {
		return nil, err
	}
	if c.TLS == nil {
		return nil, fmt.Errorf("tunnel to %s: no TLS configuration", node)
	}
	c.init()
	conn, warm, err := c.pool.get(ctx, node)
	defer c.pool.refill(node)
	if err != nil {
		return nil, fmt.Errorf("tunnel to %s: %w", node, err)
	}
	st, ver, err := exchange(ctx, conn, hdr)
	if err != nil && warm && stale(err) && ctx.Err() == nil {
		// The far daemon closed the ready connection before our header
		// reached it (restart, idle limit): nothing was asked of it yet,
		// so a fresh connection is safe.
		conn.Close()
		if conn, err = c.handshake(ctx, node); err != nil {
			return nil, fmt.Errorf("tunnel to %s: %w", node, err)
		}
		st, ver, err = exchange(ctx, conn, hdr)
	}
	if err != nil {
		conn.Close()
		if alert := tls.AlertError(0); errors.As(err, &alert) {
			// TLS 1.3: the server judges the client's certificate after
			// the client's side of the handshake ended; its refusal comes
			// as an alert on the first read.
			err = &HandshakeError{Err: err}
		}
		return nil, fmt.Errorf("tunnel to %s: %w", node, err)
	}
	if st != StatusOK {
		conn.Close()
		return nil, fmt.Errorf("tunnel to %s for %s: %w", node, h.Dst, &StatusError{Status: st, Version: ver})
	}
	return conn, nil
}

// Prewarm keeps ready connections to each of nodes from now on, so even
// the first application connection to them finds one.
func (c *Client) Prewarm(nodes []Node) {
	if c.TLS == nil {
		return
	}
	c.init()
	c.pool.prewarm(nodes)
}

// Close closes every ready connection; Dial still works afterwards.
func (c *Client) Close() {
	c.init()
	c.pool.close()
}

// handshake dials node and runs the TLS handshake.
func (c *Client) handshake(ctx context.Context, node Node) (*tls.Conn, error) {
	d := c.Dialer
	if d == nil {
		d = &net.Dialer{}
	}
	nc, err := d.DialContext(ctx, "tcp", node.Addr.String())
	if err != nil {
		return nil, err
	}
	tc := tls.Client(nc, c.TLS(node.Name))
	if err := tc.HandshakeContext(ctx); err != nil {
		nc.Close()
		return nil, &HandshakeError{Err: err}
	}
	return tc, nil
}

// HandshakeError is a failed TLS handshake with a tunnel server: the
// server is not the node expected, not of the trust bundle, or this node
// has no identity to present (identity.Reason names which).
type HandshakeError struct{ Err error }

// Error returns "tls handshake: <cause>".
func (e *HandshakeError) Error() string { return "tls handshake: " + e.Err.Error() }

// Unwrap returns the cause.
func (e *HandshakeError) Unwrap() error { return e.Err }

// exchange writes the header and reads the reply, within ctx.
func exchange(ctx context.Context, conn *tls.Conn, hdr []byte) (Status, uint8, error) {
	if dl, ok := ctx.Deadline(); ok {
		conn.SetDeadline(dl)
	}
	// Cancellation interrupts the write and the read below.
	stop := context.AfterFunc(ctx, func() { conn.SetDeadline(time.Unix(1, 0)) })
	st, ver, err := handshake(conn, hdr)
	if !stop() {
		return 0, 0, ctx.Err()
	}
	conn.SetDeadline(time.Time{})
	return st, ver, err
}

// stale reports whether err is a ready connection found closed by the far
// side before it answered.
func stale(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE)
}

func handshake(conn net.Conn, hdr []byte) (Status, uint8, error) {
	if _, err := conn.Write(hdr); err != nil {
		return 0, 0, fmt.Errorf("write header: %w", err)
	}
	var r [ReplyLen]byte
	if _, err := io.ReadFull(conn, r[:]); err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return 0, 0, fmt.Errorf("read reply: server closed the connection: %w", err)
		}
		return 0, 0, fmt.Errorf("read reply: %w", err)
	}
	if r[0] != replyMagic0 || r[1] != replyMagic1 {
		return 0, 0, fmt.Errorf("read reply: not a tunnel server (% x)", r[:])
	}
	return Status(r[3]), r[2], nil
}
