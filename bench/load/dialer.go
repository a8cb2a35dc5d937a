package load

import (
	"context"
	"net"
	"time"

	"github.com/meshless/meshless/daemon/native"
)

// NetworkNative is the Dialer network of the Meshless native API: Addr is
// a target "namespace/meshlet/service", dialed through the pod's node
// daemon (package daemon/native; its folder from $MESHLESS_NATIVE_DIR or
// /meshlet).
const NetworkNative = "native"

// Dialer opens the client's connections: "tcp4" host:port, "unix" path,
// or NetworkNative target.
type Dialer struct {
	Network, Addr string
	Timeout       time.Duration
}

// dial opens one connection. A native one counts the whole hand-shake
// with the daemon (request, reply, and on the same node the hand-off of
// the server's socket) as the connect, as an app sees it.
func (d Dialer) dial(ctx context.Context) (net.Conn, error) {
	t := d.Timeout
	if t == 0 {
		t = 15 * time.Second
	}
	if d.Network == NetworkNative {
		return (&native.Dialer{Timeout: t}).Dial(ctx, d.Addr)
	}
	c, err := (&net.Dialer{Timeout: t}).DialContext(ctx, d.Network, d.Addr)
	if err != nil {
		return nil, err
	}
	if tc, ok := c.(*net.TCPConn); ok {
		tc.SetNoDelay(true)
	}
	return c, nil
}
