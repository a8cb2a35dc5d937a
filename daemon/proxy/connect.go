package proxy

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/netip"
	"os"
	"strings"
	"time"

	"github.com/meshless/meshless/daemon/decide"
	"github.com/meshless/meshless/daemon/inpod"
	"github.com/meshless/meshless/daemon/meshletdir"
	"github.com/meshless/meshless/daemon/metrics"
	"github.com/meshless/meshless/daemon/podnet"
	"github.com/meshless/meshless/daemon/race"
	"github.com/meshless/meshless/daemon/relay"
	"github.com/meshless/meshless/daemon/tunnel"
)

// leg is the upstream side of a forwarded connection: the connection, its
// path label, and the destination side's ticket when it delivered
// locally. Closing it (a race's loser) releases the ticket too.
type leg struct {
	conn   net.Conn
	path   string
	ticket *decide.Ticket
	// idle is the destination side's idle timeout when it was decided
	// here (a local delivery); 0 leaves the plan's.
	idle time.Duration
}

// Close closes the connection and forgets its ticket.
func (l *leg) Close() error {
	l.ticket.Done()
	return l.conn.Close()
}

// connect reaches one of targets on behalf of pod's app at src (service
// is "namespace/name", empty for a pod address): the only one, or the
// winner of a race among them. It returns the connection, ready for
// application bytes.
func (h *Handler) connect(ctx context.Context, pod *inpod.Pod, src netip.AddrPort, service string, targets []decide.Target) (*leg, error) {
	_, name, _ := strings.Cut(service, "/")
	if len(targets) == 1 {
		return h.connectTarget(ctx, pod, src, name, targets[0])
	}
	idx := make([]int, len(targets))
	for i := range idx {
		idx[i] = i
	}
	dial := func(ctx context.Context, i int) (*leg, error) {
		return h.connectTarget(ctx, pod, src, name, targets[i])
	}
	l, _, err := race.Dial(ctx, idx, dial, race.Options[int]{
		Fanout:   h.cfg.RaceFanout,
		Stagger:  h.cfg.RaceStagger,
		Learn:    h.history, // nil with RaceFixed
		Key:      func(i int) string { return targets[i].String() },
		Priority: func(i int) int { return targets[i].Priority },
		Report: func(i int, r race.Result, err error) {
			h.countRace(r)
			if r == race.Failed {
				h.log.Debug("race candidate failed", "candidate", targets[i].String(), "err", err)
			}
		},
	})
	if err != nil {
		return nil, fmt.Errorf("service %s: %w", service, err)
	}
	return l, nil
}

// connectTarget reaches one target: a pod of this node through the
// destination side's decision and deliver, a pod of another node through
// the tunnel, anything else from inside the source pod's netns, as the pod
// would without the mesh.
func (h *Handler) connectTarget(ctx context.Context, pod *inpod.Pod, src netip.AddrPort, service string, t decide.Target) (*leg, error) {
	switch t.Via {
	case decide.ViaLocal:
		adm := h.cfg.Decider.Admit(decide.Arrival{From: decide.FromLocal, Dst: t.Addr, Src: src, Service: service, SrcPod: pod})
		if adm.Refused != nil {
			return nil, adm.Refused
		}
		h.audit(adm, src, t.Addr)
		c, path, err := h.deliver(ctx, adm, t.Addr)
		if err != nil {
			adm.Ticket.Done()
			return nil, err
		}
		return &leg{conn: c, path: path, ticket: adm.Ticket, idle: adm.IdleTimeout}, nil
	case decide.ViaTunnel:
		c, err := h.cfg.Tunnel.Dial(ctx, tunnel.Node{Name: t.Node, Addr: t.Tunnel}, tunnel.Header{Dst: t.Addr, Src: src, Service: service})
		if err != nil {
			return nil, err
		}
		return &leg{conn: c, path: metrics.PathRemote}, nil
	}
	c, err := pod.Dial(ctx, network(t.Addr.Addr()), t.Addr.String(), podnet.DialOptions{})
	if err != nil {
		return nil, fmt.Errorf("dial %s from pod %s: %w", t.Addr, pod.Key(), err)
	}
	return &leg{conn: c, path: metrics.PathPassthrough}, nil
}

// deliver connects to dst, an address of the admitted pod, the way the
// admission says: through the pod's unix socket when it serves one, else
// through a socket inside the pod's netns bound to the client's address
// with the transparent mark. It returns the connection and its path label,
// PathUDS or PathLocal.
func (h *Handler) deliver(ctx context.Context, adm decide.Admission, dst netip.AddrPort) (relay.Conn, string, error) {
	if adm.Socket != "" {
		c, err := dialUnix(ctx, adm.Socket)
		if err == nil {
			return c, metrics.PathUDS, nil
		}
		if !errors.Is(err, fs.ErrNotExist) {
			// A stale or broken socket: the pod still listens on TCP,
			// maybe; say so and try it.
			h.log.Warn("pod unix socket unusable, dialling its address", "pod", adm.Pod.Key(), "socket", adm.Socket, "err", err)
		}
	}
	o := podnet.DialOptions{Source: adm.Bind}
	c, err := adm.Pod.Dial(ctx, network(dst.Addr()), dst.String(), o)
	if err != nil {
		return nil, "", fmt.Errorf("dial %s in pod %s: %w", dst, adm.Pod.Key(), err)
	}
	return c, metrics.PathLocal, nil
}

// dialUnix connects to the unix stream socket at path, or fails with an
// error wrapping fs.ErrNotExist when there is none.
func dialUnix(ctx context.Context, path string) (*net.UnixConn, error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	if st.Mode().Type() != fs.ModeSocket {
		return nil, fmt.Errorf("%s is not a socket: %w", path, fs.ErrNotExist)
	}
	// The kubelet's pod folders are too deep for a socket address:
	// meshletdir.Dial reaches the socket through its folder.
	return meshletdir.Dial(ctx, path)
}
