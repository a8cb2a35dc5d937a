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
	"github.com/meshless/meshless/daemon/race"
	"github.com/meshless/meshless/daemon/routes"
	"github.com/meshless/meshless/daemon/tunnel"
)

// outbound forwards a connection pod's app made to dst.
func (h *Handler) outbound(ctx context.Context, pod *agent.Pod, c *net.TCPConn, dst netip.AddrPort) {
	src := unmapAP(c.RemoteAddr().(*net.TCPAddr).AddrPort())
	r := h.cfg.Routes.Lookup(dst)
	dctx, cancel := context.WithTimeout(ctx, h.cfg.DialTimeout)
	defer cancel()
	var (
		up   net.Conn
		path string
		err  error
	)
	switch r.Kind {
	case routes.KindService:
		if len(r.Candidates) == 0 {
			h.fail(ReasonNoEndpoints, pod, agent.Outbound, c, fmt.Errorf("service %s has no endpoints", r.Service))
			return
		}
		up, path, err = h.dialCandidates(dctx, pod, src, serviceName(r.Service), r.Candidates)
	case routes.KindPod:
		up, path, err = h.dialCandidate(dctx, pod, src, "", r.Pod)
	default:
		up, path, err = h.direct(dctx, pod, dst)
	}
	cancel()
	if err != nil {
		h.fail(ReasonDial, pod, agent.Outbound, c, err)
		return
	}
	upc, err := asPump(up)
	if err != nil {
		up.Close()
		h.fail(ReasonConnType, pod, agent.Outbound, c, err)
		return
	}
	h.log.Debug("forward", "pod", pod.Key(), "src", src.String(), "dst", dst.String(),
		"route", r.Kind.String(), "service", r.Service, "path", path, "upstream", up.RemoteAddr().String())
	h.pipe(ctx, metrics.Outbound, path, c, upc)
}

// serviceName returns the name part of "namespace/name".
func serviceName(id string) string {
	_, name, ok := strings.Cut(id, "/")
	if !ok {
		return id
	}
	return name
}

// dialCandidates reaches one of a service's candidates: the only one, or
// the winner of a race among them.
func (h *Handler) dialCandidates(ctx context.Context, pod *agent.Pod, src netip.AddrPort, service string, cands []routes.Candidate) (net.Conn, string, error) {
	if len(cands) == 1 {
		return h.dialCandidate(ctx, pod, src, service, cands[0])
	}
	// Each dial records its path at its index; the race's result is
	// received after the winner's dial returned, so reading it is safe.
	paths := make([]string, len(cands))
	idx := make([]int, len(cands))
	for i := range idx {
		idx[i] = i
	}
	dial := func(ctx context.Context, i int) (net.Conn, error) {
		c, path, err := h.dialCandidate(ctx, pod, src, service, cands[i])
		paths[i] = path
		return c, err
	}
	conn, won, err := race.Dial(ctx, idx, dial, race.Options[int]{
		Fanout:  h.cfg.RaceFanout,
		Stagger: h.cfg.RaceStagger,
		Report: func(i int, r race.Result, err error) {
			if m := h.cfg.Metrics; m != nil {
				m.Race.WithLabelValues(string(r)).Inc()
			}
			if r == race.Failed {
				h.log.Debug("race candidate failed", "candidate", cands[i].String(), "err", err)
			}
		},
	})
	if err != nil {
		return nil, "", fmt.Errorf("service %s: %w", service, err)
	}
	return conn, paths[won], nil
}

// dialCandidate reaches one candidate: on this node through deliver, on
// another through the tunnel. A destination the mesh cannot reach itself
// (a local address of no registered pod, a node without a tunnel address)
// is dialled directly from the source pod, over the pod network.
func (h *Handler) dialCandidate(ctx context.Context, pod *agent.Pod, src netip.AddrPort, service string, cand routes.Candidate) (net.Conn, string, error) {
	if cand.Local {
		dpod, ok := h.cfg.Pods.PodByIP(cand.Addr.Addr())
		if !ok {
			return h.direct(ctx, pod, cand.Addr)
		}
		return h.deliver(ctx, dpod, src.Addr(), cand.Addr, service)
	}
	if !cand.Tunnel.IsValid() {
		return h.direct(ctx, pod, cand.Addr)
	}
	c, err := h.cfg.Tunnel.DialHeader(ctx, cand.Tunnel, tunnel.Header{Dst: cand.Addr, Src: src, Service: service})
	if err != nil {
		return nil, "", err
	}
	return c, metrics.PathRemote, nil
}

// direct dials dst from inside pod's netns, as the pod would without the
// mesh.
func (h *Handler) direct(ctx context.Context, pod *agent.Pod, dst netip.AddrPort) (net.Conn, string, error) {
	c, err := pod.Dial(ctx, network(dst.Addr()), dst.String(), podnet.DialOptions{})
	if err != nil {
		return nil, "", fmt.Errorf("dial %s from pod %s: %w", dst, pod.Key(), err)
	}
	return c, metrics.PathPassthrough, nil
}
