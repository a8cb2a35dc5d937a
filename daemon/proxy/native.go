package proxy

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"time"

	"github.com/meshless/meshless/daemon/decide"
	"github.com/meshless/meshless/daemon/inpod"
	"github.com/meshless/meshless/daemon/metrics"
	"github.com/meshless/meshless/daemon/native"
	"github.com/meshless/meshless/daemon/relay"
)

var _ inpod.NativeHandler = (*Handler)(nil)

// HandleNative implements inpod.NativeHandler: a connection of pod's app
// to its /meshlet/client/meshless. It reads the request (bounded in size
// and time), decides (decide.Native, then decide.Admit for each target as
// for any connection), connects, answers, and then either relays the
// connection or, when the winner is a unix socket of a pod of this node
// and the service keeps no per-connection limits, hands the client the
// connection to the server's socket (SCM_RIGHTS) and steps out of the
// byte path.
func (h *Handler) HandleNative(ctx context.Context, pod *inpod.Pod, c *net.UnixConn) {
	defer c.Close()
	c.SetDeadline(time.Now().Add(native.RequestTimeout))
	req, err := native.ReadRequest(c)
	if err != nil {
		h.nativeFail(pod, c, metrics.ReasonNativeRequest, native.StatusFor(err), err)
		return
	}
	plan := h.cfg.Decider.Native(pod, req.Namespace, req.Meshlet, req.Service)
	if plan.Refused != nil {
		h.nativeFail(pod, c, plan.Refused.Reason, nativeStatus(plan.Refused.Reason), plan.Refused.Err)
		return
	}
	// The source is the pod, as for its TCP connections: its address is
	// what the far side checks (a pod of this node) and binds.
	var src netip.AddrPort
	if ips := pod.Spec().IPs; len(ips) > 0 {
		src = netip.AddrPortFrom(ips[0], 0)
	}
	dctx, cancel := context.WithTimeout(ctx, h.cfg.DialTimeout)
	up, err := h.connect(dctx, pod, src, plan.Service, plan.Targets)
	if err != nil && len(plan.Spill) > 0 && reasonOf(err) == metrics.ReasonMaxConn {
		up, err = h.connect(dctx, pod, src, plan.Service, plan.Spill)
	}
	cancel()
	if err != nil {
		reason := reasonOf(err)
		h.nativeFail(pod, c, reason, nativeStatus(reason), err)
		return
	}
	defer up.ticket.Done()
	if uc, ok := up.conn.(*net.UnixConn); ok && up.ticket.Unlimited() {
		h.handoff(pod, c, uc, req)
		return
	}
	if err := native.WriteReply(c, native.Reply{Status: native.StatusOK}); err != nil {
		up.conn.Close()
		h.count(metrics.ReasonNativeRequest)
		return
	}
	c.SetDeadline(time.Time{})
	upc, err := relay.AsConn(up.conn)
	if err != nil {
		up.conn.Close()
		h.count(metrics.ReasonConnType)
		return
	}
	up.ticket.Attach(func(why string) {
		h.count(metrics.ReasonRevoked)
		h.log.Warn("connection closed", "reason", metrics.ReasonRevoked, "pod", pod.Key(), "native", req.String(), "why", why)
		c.Close()
	})
	idle := plan.IdleTimeout
	if up.idle > 0 {
		idle = up.idle
	}
	h.log.Debug("native", "pod", pod.Key(), "service", req.String(), "path", up.path)
	h.relay(ctx, metrics.Outbound, up.path, c, upc, idle)
}

// handoff gives the client the daemon's connection to the server's unix
// socket and closes the daemon's copies: from now on client and server
// talk directly (zero TCP/IP, the daemon out of the byte path). The
// connection is counted; its bytes, which the daemon no longer sees, are
// not.
func (h *Handler) handoff(pod *inpod.Pod, c, server *net.UnixConn, req native.Request) {
	defer server.Close()
	if err := native.WriteReply(c, native.Reply{Status: native.StatusOK, Handoff: true}); err != nil {
		h.count(metrics.ReasonNativeRequest)
		return
	}
	if err := native.SendConn(c, server); err != nil {
		h.count(metrics.ReasonNativeRequest)
		h.log.Warn("native api: hand-off failed", "pod", pod.Key(), "service", req.String(), "err", err)
		return
	}
	if m := h.cfg.Metrics; m != nil {
		m.Connections.WithLabelValues(metrics.Outbound, metrics.PathUDS).Inc()
		m.Handoffs.Inc()
	}
	h.log.Debug("native hand-off", "pod", pod.Key(), "service", req.String())
}

// nativeFail answers a refused request with its status and counts it.
func (h *Handler) nativeFail(pod *inpod.Pod, c *net.UnixConn, reason string, st native.Status, err error) {
	h.count(reason)
	h.log.Warn("native connection refused", "reason", reason, "pod", pod.Key(), "status", st.String(), "err", err)
	msg := ""
	if err != nil {
		msg = err.Error()
	}
	if ref := (*decide.Refusal)(nil); errors.As(err, &ref) && ref.Err != nil {
		msg = ref.Err.Error()
	}
	native.WriteReply(c, native.Reply{Status: st, Message: msg})
}

// nativeStatus is the native API's status for a failure reason.
func nativeStatus(reason string) native.Status {
	switch reason {
	case metrics.ReasonUnknownService:
		return native.StatusUnknownService
	case metrics.ReasonNoEndpoints:
		return native.StatusNoInstance
	case metrics.ReasonDenied:
		return native.StatusNotAllowed
	case metrics.ReasonMaxConn:
		return native.StatusAllFull
	case metrics.ReasonDial, metrics.ReasonForbidden, metrics.ReasonPeerSource:
		return native.StatusUnreachable
	}
	return native.StatusInternal
}
