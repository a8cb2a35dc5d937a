package forward

import (
	"context"
	"fmt"
	"net"

	"github.com/meshless/meshless/daemon/metrics"
	"github.com/meshless/meshless/daemon/tunnel"
)

// DialTarget implements tunnel.Dialer: it delivers a tunnelled connection
// to a pod registered on this node, through the pod's unix socket for
// hd.Service (or the port) when it serves one, else inside its netns with
// hd.Src as the source. Any other destination is tunnel.ErrForbidden: the
// tunnel is not an open relay.
func (h *Handler) DialTarget(ctx context.Context, hd tunnel.Header) (net.Conn, error) {
	pod, ok := h.cfg.Pods.PodByIP(hd.Dst.Addr())
	if !ok {
		return nil, fmt.Errorf("%s is not a pod of this node: %w", hd.Dst.Addr(), tunnel.ErrForbidden)
	}
	c, _, err := h.deliver(ctx, pod, hd.Src.Addr(), hd.Dst, hd.Service)
	if err != nil {
		return nil, err
	}
	return c, nil
}

// TunnelServer returns the tunnel server of this node: it delivers with
// DialTarget, counts rejected tunnels in meshless_connection_failures_total
// with the tunnel.Reason as reason, and delivered ones as direction
// inbound, path uds or remote.
func (h *Handler) TunnelServer() *tunnel.Server {
	return &tunnel.Server{
		Dialer:      h,
		DialTimeout: h.cfg.DialTimeout,
		OnReject: func(r tunnel.Reason, err error) {
			h.count(string(r))
			h.log.Warn("tunnel rejected", "reason", string(r), "err", err)
		},
		Pipe: func(client *net.TCPConn, target net.Conn) {
			path := metrics.PathRemote
			if _, ok := target.(*net.UnixConn); ok {
				path = metrics.PathUDS
			}
			t, err := asPump(target)
			if err != nil {
				target.Close()
				client.Close()
				h.count(ReasonConnType)
				return
			}
			// The server closes both connections when it stops, which
			// ends the pump.
			h.pipe(context.Background(), metrics.Inbound, path, client, t)
		},
	}
}
