package native

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"time"
)

// Paths and timeouts of the native API.
const (
	// DefaultDir is the directory Meshless provides in every pod of a
	// Meshlet: servers listen in DefaultDir/server, the daemon in
	// DefaultDir/client.
	DefaultDir = "/meshlet"
	// DirEnv, when set, replaces DefaultDir for a Dialer or ListenConfig
	// with no Dir: the local lab's pods share one file system, so each
	// gets a directory of its own this way, with unchanged app binaries.
	DirEnv = "MESHLESS_NATIVE_DIR"
	// ClientSocket is the daemon's socket, relative to the directory.
	ClientSocket = "client/meshless"
	// ServerDir holds the servers' sockets, relative to the directory.
	ServerDir = "server"

	// DefaultDialTimeout bounds a Dial (connect, request, reply, handoff)
	// when neither the Dialer nor the context sets a shorter bound. The
	// daemon may race several instances, across nodes, before it answers.
	DefaultDialTimeout = 30 * time.Second
	// RequestTimeout is how long a daemon waits for a whole request
	// after accepting a client, before it answers StatusTimeout.
	RequestTimeout = 5 * time.Second
)

// baseDir returns d, or the directory DirEnv names, or DefaultDir.
func baseDir(d string) string {
	if d != "" {
		return d
	}
	if env := os.Getenv(DirEnv); env != "" {
		return env
	}
	return DefaultDir
}

// Dialer connects to services through the node daemon. Its zero value is
// ready to use.
type Dialer struct {
	// Dir is the native API's directory; when empty, $MESHLESS_NATIVE_DIR
	// or DefaultDir. Dial connects to Dir/client/meshless.
	Dir string
	// Timeout bounds the whole Dial; DefaultDialTimeout when 0. A
	// context deadline that comes earlier wins.
	Timeout time.Duration
}

// socket returns the path of the daemon's socket.
func (d *Dialer) socket() string { return filepath.Join(baseDir(d.Dir), ClientSocket) }

// Dial connects to target, "namespace/meshlet/service", with a zero
// Dialer.
func Dial(ctx context.Context, target string) (net.Conn, error) {
	var d Dialer
	return d.Dial(ctx, target)
}

// Dial connects to the daemon's socket, names target
// ("namespace/meshlet/service") and returns a connection that carries the
// service's bytes, both ways, with half-close (the connection is a
// *net.UnixConn or *net.TCPConn; both have CloseWrite). It is either the
// connection to the daemon, which then relays, or, when the daemon hands
// one over, a connection straight to the server's socket: Dial then
// closes its connection to the daemon, which is out of the byte path.
//
// A refusal is a *StatusError, which errors.Is matches against ErrRefused
// and the status's error (ErrUnknownService, ErrNotAllowed, ErrNoInstance,
// ErrAllFull, ...). Cancelling ctx aborts a Dial in progress; it has no
// effect on the returned connection.
func (d *Dialer) Dial(ctx context.Context, target string) (net.Conn, error) {
	req, err := ParseTarget(target)
	if err != nil {
		return nil, fmt.Errorf("native dial: %w", err)
	}
	timeout := d.Timeout
	if timeout <= 0 {
		timeout = DefaultDialTimeout
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var nd net.Dialer
	c, err := nd.DialContext(ctx, "unix", d.socket())
	if err != nil {
		return nil, fmt.Errorf("native dial %s: %w", target, err)
	}
	conn, err := handshake(ctx, c.(*net.UnixConn), req)
	if err != nil {
		c.Close()
		return nil, fmt.Errorf("native dial %s: %w", target, err)
	}
	if conn != c {
		// Handed over: the daemon's connection has done its job.
		c.Close()
	}
	return conn, nil
}

// handshake sends req on c, reads the reply and, for a handoff, the
// passed connection. It returns c itself (relayed) or the passed
// connection; on error the caller closes c, and handshake has closed
// anything else.
func handshake(ctx context.Context, c *net.UnixConn, req Request) (net.Conn, error) {
	// A done context (cancelled, or past the Dial's deadline) interrupts a
	// blocked read or write through a deadline in the past; stop() tells
	// whether that happened, so the error is always ctx.Err() then.
	stop := context.AfterFunc(ctx, func() { c.SetDeadline(time.Unix(1, 0)) })
	conn, err := exchange(c, req)
	if !stop() {
		if conn != nil && conn != net.Conn(c) {
			conn.Close()
		}
		if err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
			err = ctx.Err()
		}
		return nil, err
	}
	if err != nil {
		return nil, err
	}
	// The deadline was for the handshake only; the handed-over
	// connection never had one.
	c.SetDeadline(time.Time{})
	return conn, nil
}

// exchange is the handshake proper, without the context's bookkeeping.
// The client sends nothing after the request before the reply: on a
// handoff, bytes written to the daemon's connection would be lost.
func exchange(c *net.UnixConn, req Request) (net.Conn, error) {
	b, err := req.MarshalBinary()
	if err != nil {
		return nil, err
	}
	if _, err := c.Write(b); err != nil {
		return nil, fmt.Errorf("send request: %w", err)
	}
	rep, err := ReadReply(c)
	if err != nil {
		return nil, err
	}
	if rep.Status != StatusOK {
		return nil, &StatusError{Status: rep.Status, Version: rep.Version, Message: rep.Message}
	}
	if !rep.Handoff {
		return c, nil
	}
	return ReceiveConn(c)
}
