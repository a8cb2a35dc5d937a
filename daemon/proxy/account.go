package proxy

import (
	"context"
	"net"
	"net/netip"
	"time"

	"github.com/meshless/meshless/daemon/decide"
	"github.com/meshless/meshless/daemon/inpod"
	"github.com/meshless/meshless/daemon/metrics"
	"github.com/meshless/meshless/daemon/race"
	"github.com/meshless/meshless/daemon/relay"
)

// relay moves the bytes between the app's connection and the upstream one
// (package relay) and accounts for the connection: it is counted when its
// bytes start to move, and its bytes when it ends.
func (h *Handler) relay(ctx context.Context, dir, path string, c relay.Conn, up relay.Conn, idle time.Duration) {
	if m := h.cfg.Metrics; m != nil {
		m.Connections.WithLabelValues(dir, path).Inc()
	}
	res := relay.Run(ctx, c, up, relay.Options{IdleTimeout: idle, Sockmap: h.cfg.Sockmap})
	if m := h.cfg.Metrics; m != nil {
		m.Bytes.WithLabelValues(dir).Add(float64(res.AToB + res.BToA))
	}
	if res.Err != nil {
		h.log.Debug("connection ended with error", "direction", dir, "path", path, "sockmap", res.Kernel, "err", res.Err)
	}
}

// fail counts and logs a connection that could not be forwarded and resets
// it, so the app sees a refused connection rather than a silent close.
func (h *Handler) fail(reason string, pod *inpod.Pod, dir inpod.Direction, c *net.TCPConn, err error) {
	h.count(reason)
	h.log.Warn("connection not forwarded", "reason", reason, "pod", pod.Key(), "direction", dir.String(),
		"src", c.RemoteAddr().String(), "err", err)
	c.SetLinger(0)
	c.Close()
}

// revoker returns what closes a live connection whose access a policy
// change withdrew: the client's side is reset, which ends the relay and
// resets the other side too.
func (h *Handler) revoker(c *net.TCPConn, src, dst netip.AddrPort) func(why string) {
	return func(why string) {
		h.count(metrics.ReasonRevoked)
		h.log.Warn("connection closed", "reason", metrics.ReasonRevoked, "src", src.String(), "dst", dst.String(), "why", why)
		c.SetLinger(0)
		c.Close()
	}
}

// audit logs and counts what --access-policy audit let through.
func (h *Handler) audit(adm decide.Admission, src, dst netip.AddrPort) {
	if adm.Audited == nil {
		return
	}
	if m := h.cfg.Metrics; m != nil {
		m.Audited.WithLabelValues(adm.Audited.Reason).Inc()
	}
	h.log.Warn("access policy audit: enforce would refuse this connection", "reason", adm.Audited.Reason,
		"src", src.String(), "dst", dst.String(), "why", adm.Audited.Err)
}

func (h *Handler) count(reason string) {
	if m := h.cfg.Metrics; m != nil {
		m.Failures.WithLabelValues(reason).Inc()
	}
}

func (h *Handler) countRace(r race.Result) {
	if m := h.cfg.Metrics; m != nil {
		m.Race.WithLabelValues(string(r)).Inc()
	}
}
