// Package relay is the one place where the node daemon moves application
// bytes: between the connection it accepted from an app and the one it
// opened towards the destination (a pod, a pod's unix socket, or another
// node's tunnel), both ways, the way a transparent proxy must: half-closes
// travel through (one side's FIN becomes a CloseWrite on the other) and an
// error on either side resets both, so an RST is never turned into a clean
// FIN.
//
//	res := relay.Run(ctx, client, upstream, relay.Options{IdleTimeout: time.Hour})
//	metrics.Bytes.Add(float64(res.AToB + res.BToA))
//
// Two engines, chosen per connection by Run:
//
//   - splice (the default): io.Copy between *net.TCPConn and *net.UnixConn,
//     which the Go runtime turns into splice(2) for TCP to TCP, TCP to unix
//     and unix to TCP: the payload never enters user space. Do not wrap the
//     connections (counting readers, deadline refreshers) or that path is
//     lost; byte counts come from io.Copy's result and idleness from the
//     kernel's TCP_INFO of the TCP sides (a unix side has no such clock and
//     is judged by its TCP peer).
//   - sockmap (Options.Sockmap, experimental, meshlessd --sockmap): the
//     kernel forwards a TCP↔TCP pair by itself through a BPF sk_skb verdict
//     program (LoadSockmap); the daemon only waits for FIN, RST and idleness.
//     A pair that cannot be made falls back to splice.
package relay

import (
	"context"
	"errors"
	"net"
	"time"
)

// Options tune a relay.
type Options struct {
	// IdleTimeout, when positive, closes both connections once neither has
	// received data for that long.
	IdleTimeout time.Duration
	// Sockmap, when set, forwards TCP↔TCP pairs in the kernel instead of
	// splicing them in user space.
	Sockmap *Sockmap
}

// Result is what a relay did.
type Result struct {
	// AToB and BToA are the bytes forwarded each way, by the kernel and by
	// user space together.
	AToB, BToA int64
	// Kernel reports that the sockmap engine carried the pair.
	Kernel bool
	// UserAToB and UserBToA are, for the sockmap engine, the part user
	// space copied: 0 unless a side could not be enabled, or data arrived
	// after the pair was released.
	UserAToB, UserBToA int64
	// Err is the first error of either direction, nil after clean EOFs on
	// both sides; ErrIdle when the idle timeout closed the connections.
	Err error
}

// ErrIdle is Result.Err when the idle timeout ended the relay.
var ErrIdle = errors.New("idle timeout")

// Conn is a stream connection whose write side can be closed alone:
// *net.TCPConn and *net.UnixConn.
type Conn interface {
	net.Conn
	CloseWrite() error
}

// Run relays a and b until both directions end, then closes both
// connections. Cancelling ctx resets both. Run owns a and b from the call
// on. With o.Sockmap set and two TCP connections it asks the kernel to
// forward them (falling back to splice when the pair cannot be made);
// otherwise it splices.
func Run(ctx context.Context, a, b Conn, o Options) Result {
	if o.Sockmap != nil {
		ta, ok1 := a.(*net.TCPConn)
		tb, ok2 := b.(*net.TCPConn)
		if ok1 && ok2 {
			if p, err := o.Sockmap.Pair(ta, tb); err == nil {
				return runPair(ctx, p, o)
			}
		}
	}
	return splice(ctx, a, b, o)
}

// AsConn returns c as a Conn, or an error for a kind of connection that
// cannot half-close.
func AsConn(c net.Conn) (Conn, error) {
	rc, ok := c.(Conn)
	if !ok {
		return nil, errors.New("connection " + c.RemoteAddr().Network() + " cannot half-close")
	}
	return rc, nil
}
