package proxy

import (
	"context"
	"crypto/tls"
	"net"

	"github.com/meshless/meshless/daemon/decide"
	"github.com/meshless/meshless/daemon/metrics"
	"github.com/meshless/meshless/daemon/relay"
	"github.com/meshless/meshless/daemon/tunnel"
)

// DialTarget implements tunnel.Dialer, the destination side of a tunnel
// from the authenticated node peer: the decision (decide.Admit, from a
// peer), then delivery to the pod. Every refusal of the decision (not a
// pod of this node, a source that is not the peer's) is
// tunnel.ErrForbidden: the tunnel is not an open relay.
func (h *Handler) DialTarget(ctx context.Context, peer string, hd tunnel.Header) (net.Conn, error) {
	adm := h.cfg.Decider.Admit(decide.Arrival{From: decide.FromPeer, Peer: peer, Dst: hd.Dst, Src: hd.Src, Service: hd.Service})
	if adm.Refused != nil {
		return nil, &forbidden{adm.Refused}
	}
	h.audit(adm, hd.Src, hd.Dst)
	c, path, err := h.deliver(ctx, adm, hd.Dst)
	if err != nil {
		adm.Ticket.Done()
		return nil, err
	}
	return &delivery{Conn: c, path: path, adm: adm}, nil
}

// delivery is a connection DialTarget made, with what the tunnel's relay
// needs to know of it. The relay moves the bytes of the embedded
// connection itself, never through this wrapper.
type delivery struct {
	relay.Conn
	path string
	adm  decide.Admission
}

// Close closes the connection and forgets its ticket (a delivery the
// tunnel server drops before relaying it).
func (d *delivery) Close() error {
	d.adm.Ticket.Done()
	return d.Conn.Close()
}

// forbidden is a refusal the tunnel reports as StatusForbidden, or
// StatusDenied and StatusFull for those reasons.
type forbidden struct{ r *decide.Refusal }

func (f *forbidden) Error() string { return f.r.Error() }

func (f *forbidden) Unwrap() []error {
	switch f.r.Reason {
	case metrics.ReasonDenied:
		return []error{f.r, tunnel.ErrDenied}
	case metrics.ReasonMaxConn:
		return []error{f.r, tunnel.ErrFull}
	}
	return []error{f.r, tunnel.ErrForbidden}
}

// TunnelServer returns the tunnel server of this node: mutual TLS with
// the node's identity, delivery with DialTarget; it counts rejected
// tunnels in meshless_connection_failures_total with their reason, and
// delivered ones as direction inbound, path uds or remote.
func (h *Handler) TunnelServer() *tunnel.Server {
	return &tunnel.Server{
		TLS:         h.cfg.Identity.ServerConfig(),
		Dialer:      h,
		DialTimeout: h.cfg.DialTimeout,
		OnReject: func(e *tunnel.RejectError) {
			if e.Stage == tunnel.StageIdle {
				h.log.Debug("tunnel: ready connection closed unused", "peer", e.Peer, "err", e.Err)
				return
			}
			h.count(e.Reason())
			h.log.Warn("tunnel rejected", "reason", e.Reason(), "peer", e.Peer, "err", e.Err)
		},
		Relay: func(client *tls.Conn, target net.Conn, _ string, hd tunnel.Header) {
			d := target.(*delivery)
			defer d.adm.Ticket.Done()
			d.adm.Ticket.Attach(func(why string) {
				h.count(metrics.ReasonRevoked)
				h.log.Warn("connection closed", "reason", metrics.ReasonRevoked, "src", hd.Src.String(), "dst", hd.Dst.String(), "why", why)
				client.NetConn().(*net.TCPConn).SetLinger(0)
				client.Close()
			})
			path := metrics.PathRemote
			if d.path == metrics.PathUDS {
				path = metrics.PathUDS
			}
			// The server closes both connections when it stops, which
			// ends the relay.
			h.relay(context.Background(), metrics.Inbound, path, client, d.Conn, d.adm.IdleTimeout)
		},
	}
}
