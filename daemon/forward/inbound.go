package forward

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"strings"

	"github.com/meshless/meshless/daemon/agent"
	"github.com/meshless/meshless/daemon/metrics"
	"github.com/meshless/meshless/daemon/podnet"
)

// Policy rules the inbound connections of meshed pods that did not come
// through a daemon (clients outside the mesh, kubelet probes).
type Policy int

const (
	// Permissive delivers them, with the client's address as source.
	Permissive Policy = iota
	// Strict refuses them (RST) unless the client is one of the node's own
	// addresses (NodeAddrs), which is where probes come from.
	Strict
)

// String returns "permissive" or "strict".
func (p Policy) String() string {
	if p == Strict {
		return "strict"
	}
	return "permissive"
}

// ParsePolicy parses "permissive" or "strict".
func ParsePolicy(s string) (Policy, error) {
	switch strings.ToLower(s) {
	case "", "permissive":
		return Permissive, nil
	case "strict":
		return Strict, nil
	}
	return 0, fmt.Errorf("unknown inbound policy %q (want permissive or strict)", s)
}

// Set implements flag.Value.
func (p *Policy) Set(s string) error {
	v, err := ParsePolicy(s)
	if err != nil {
		return err
	}
	*p = v
	return nil
}

// inbound delivers a connection that arrived at pod's inbound listener to
// its original destination dst (the pod's own address) inside the pod,
// bound to the client's address with the transparent mark, so the app
// sees the real client.
func (h *Handler) inbound(ctx context.Context, pod *agent.Pod, c *net.TCPConn, dst netip.AddrPort) {
	src := unmapAP(c.RemoteAddr().(*net.TCPAddr).AddrPort())
	if h.cfg.InboundPolicy == Strict && !h.cfg.NodeAddrs.Contains(src.Addr()) {
		h.fail(ReasonInboundPolicy, pod, agent.Inbound, c, fmt.Errorf("strict inbound policy: %s is not this node", src.Addr()))
		return
	}
	o := podnet.DialOptions{}
	if sameFamily(src.Addr(), dst.Addr()) && src.Addr() != dst.Addr() {
		o.Source = src.Addr()
	}
	dctx, cancel := context.WithTimeout(ctx, h.cfg.DialTimeout)
	up, err := pod.Dial(dctx, network(dst.Addr()), dst.String(), o)
	cancel()
	if err != nil {
		h.fail(ReasonDial, pod, agent.Inbound, c, err)
		return
	}
	h.log.Debug("inbound", "pod", pod.Key(), "src", src.String(), "dst", dst.String())
	h.pipe(ctx, metrics.Inbound, metrics.PathPassthrough, c, up)
}
