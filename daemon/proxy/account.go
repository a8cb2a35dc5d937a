package proxy

import (
	"context"
	"net"
	"time"

	"github.com/meshless/meshless/daemon/inpod"
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
