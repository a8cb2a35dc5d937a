// Package passthrough is the default connection handler: it forwards every
// connection to its original destination as if the mesh were not there.
//
// Outbound, the daemon dials the original destination from inside the
// source pod's netns, so egress leaves through the pod's own interface with
// the pod's address. Inbound, it dials the original destination (the pod's
// own IP and port) inside the same pod. Both sockets carry the skip mark so
// the pod's redirect rules do not send them back to the daemon.
package passthrough

import (
	"context"
	"log/slog"
	"net"
	"net/netip"
	"time"

	"github.com/meshless/meshless/daemon/agent"
	"github.com/meshless/meshless/daemon/metrics"
	"github.com/meshless/meshless/daemon/origdst"
	"github.com/meshless/meshless/daemon/podnet"
	"github.com/meshless/meshless/daemon/pump"
)

// Handler is an agent.ConnHandler that forwards to the original
// destination.
type Handler struct {
	// Metrics, if set, counts connections, failures and bytes.
	Metrics *metrics.Metrics
	// Logger defaults to slog.Default().
	Logger *slog.Logger
	// DialTimeout bounds the dial to the destination; default 10s.
	DialTimeout time.Duration
	// IdleTimeout closes connections idle that long; 0 never does.
	IdleTimeout time.Duration
}

var _ agent.ConnHandler = (*Handler)(nil)

// HandleConn implements agent.ConnHandler.
func (h *Handler) HandleConn(ctx context.Context, pod *agent.Pod, dir agent.Direction, c *net.TCPConn) {
	log := h.Logger
	if log == nil {
		log = slog.Default()
	}
	dst, err := origdst.Get(c)
	if err != nil {
		h.fail(log, "origdst", pod, dir, c, err)
		return
	}
	// A connection straight to the listener (not redirected) would make
	// the daemon dial its own listener, over and over.
	if local, ok := c.LocalAddr().(*net.TCPAddr); ok && unmap(local.AddrPort()) == dst {
		h.fail(log, "loop", pod, dir, c, nil)
		return
	}
	timeout := h.DialTimeout
	if timeout <= 0 {
		timeout = 10 * time.Second
	}
	dctx, cancel := context.WithTimeout(ctx, timeout)
	up, err := pod.Dial(dctx, network(dst.Addr()), dst.String(), podnet.DialOptions{})
	cancel()
	if err != nil {
		h.fail(log, "dial", pod, dir, c, err)
		return
	}
	if h.Metrics != nil {
		h.Metrics.Connections.WithLabelValues(dir.String(), metrics.PathPassthrough).Inc()
	}
	log.Debug("passthrough", "pod", pod.Key(), "direction", dir.String(), "src", c.RemoteAddr().String(), "dst", dst.String())
	res := pump.Run(ctx, c, up, pump.Options{IdleTimeout: h.IdleTimeout})
	if h.Metrics != nil {
		h.Metrics.Bytes.WithLabelValues(dir.String()).Add(float64(res.AToB + res.BToA))
	}
	if res.Err != nil {
		log.Debug("connection ended with error", "pod", pod.Key(), "dst", dst.String(), "err", res.Err)
	}
}

// fail counts and logs a connection that could not be forwarded and resets
// it, so the app sees a refused connection rather than a silent close.
func (h *Handler) fail(log *slog.Logger, reason string, pod *agent.Pod, dir agent.Direction, c *net.TCPConn, err error) {
	if h.Metrics != nil {
		h.Metrics.Failures.WithLabelValues(reason).Inc()
	}
	log.Warn("connection not forwarded", "reason", reason, "pod", pod.Key(), "direction", dir.String(),
		"src", c.RemoteAddr().String(), "err", err)
	c.SetLinger(0)
	c.Close()
}

func network(a netip.Addr) string {
	if a.Is4() || a.Is4In6() {
		return "tcp4"
	}
	return "tcp6"
}

func unmap(ap netip.AddrPort) netip.AddrPort {
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
}
