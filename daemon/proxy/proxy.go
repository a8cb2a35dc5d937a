// Package proxy carries out what package decide decides, for every
// connection the daemon accepts: inside a pod (package inpod hands them
// over) and on the tunnel port.
//
//	h, err := proxy.New(proxy.Config{Decider: d, Metrics: m})
//	inpod.New(inpod.Config{Handler: h, ...}) // pods' connections
//	srv := h.TunnelServer()                  // node-address :15008
//	err = srv.Serve(ctx, ln)
//
// The stages of a connection, in datapath order (docs/design.md has the
// whole map):
//
//   - classify (HandleConn): read the original destination
//     (SO_ORIGINAL_DST) and refuse a connection made to the daemon's own
//     listener;
//   - decide: decide.Outbound for a pod's outgoing connection, decide.Admit
//     for each delivery to a pod of this node (inbound capture, tunnel,
//     and the local targets of an outgoing one);
//   - connect (connect.go, deliver.go): race the plan's targets; a local
//     one through the pod's unix socket or a socket opened inside its
//     netns with the client's address, a remote one through the tunnel to
//     its node's daemon, anything else from inside the source pod as is;
//   - move bytes: package relay;
//   - account (account.go): meshless_connections_total,
//     meshless_bytes_total, meshless_connection_failures_total, and the
//     log line of every refusal.
package proxy

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/netip"
	"time"

	"github.com/meshless/meshless/daemon/decide"
	"github.com/meshless/meshless/daemon/identity"
	"github.com/meshless/meshless/daemon/inpod"
	"github.com/meshless/meshless/daemon/metrics"
	"github.com/meshless/meshless/daemon/origdst"
	"github.com/meshless/meshless/daemon/race"
	"github.com/meshless/meshless/daemon/relay"
	"github.com/meshless/meshless/daemon/tunnel"
)

// DefaultDialTimeout bounds a connection attempt (a whole race).
const DefaultDialTimeout = 10 * time.Second

// Config is what a Handler needs.
type Config struct {
	// Decider makes every decision. Required.
	Decider *decide.Decider
	// Metrics, if set, counts connections, failures, races and bytes.
	Metrics *metrics.Metrics
	// Logger defaults to slog.Default().
	Logger *slog.Logger
	// Identity is this node's TLS identity, which both ends of the tunnel
	// present and judge the other's by. Without it (nil, or no material
	// yet) the tunnel's handshakes fail: cross-node connections are
	// refused, never sent in the clear.
	Identity *identity.Source
	// Tunnel dials other nodes' daemons; nil makes one with Identity's
	// client configurations.
	Tunnel *tunnel.Client
	// RaceFanout bounds the targets dialled at once; 0 means all.
	RaceFanout int
	// RaceStagger, with RaceFixed, delays each further target of a race
	// by that much (Happy Eyeballs); 0 dials them all at once.
	RaceStagger time.Duration
	// RaceFixed races without learning: targets by priority then at
	// random, RaceStagger apart. By default races learn each target's
	// connect time and stalls (race.History): the likely fastest first,
	// the next after an attempt delay derived from it.
	RaceFixed bool
	// DialTimeout bounds reaching a destination; DefaultDialTimeout when 0.
	DialTimeout time.Duration
	// Sockmap, if set, has the kernel forward TCP↔TCP connections (package
	// relay); connections with a unix side, or that cannot be paired, are
	// still spliced.
	Sockmap *relay.Sockmap
}

// Handler forwards connections; it implements inpod.ConnHandler and, for
// the tunnel server, tunnel.Dialer.
type Handler struct {
	cfg Config
	log *slog.Logger
	// history learns the race targets' connect times and stalls, shared
	// by every race of the daemon; nil with RaceFixed.
	history *race.History
}

var (
	_ inpod.ConnHandler = (*Handler)(nil)
	_ tunnel.Dialer     = (*Handler)(nil)
)

// New returns a Handler for cfg.
func New(cfg Config) (*Handler, error) {
	if cfg.Decider == nil {
		return nil, errors.New("proxy: a decider is required")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Tunnel == nil {
		cfg.Tunnel = &tunnel.Client{}
		if cfg.Identity != nil {
			cfg.Tunnel.TLS = cfg.Identity.ClientConfig
		}
	}
	if cfg.DialTimeout <= 0 {
		cfg.DialTimeout = DefaultDialTimeout
	}
	h := &Handler{cfg: cfg, log: cfg.Logger}
	if !cfg.RaceFixed {
		h.history = race.NewHistory(race.HistoryConfig{})
	}
	return h, nil
}

// HandleConn implements inpod.ConnHandler: the classify stage of a
// connection accepted inside pod.
func (h *Handler) HandleConn(ctx context.Context, pod *inpod.Pod, dir inpod.Direction, c *net.TCPConn) {
	dst, err := origdst.Get(c)
	if err != nil {
		h.fail(metrics.ReasonOrigDst, pod, dir, c, err)
		return
	}
	// A connection straight to the listener (not redirected) would make
	// the daemon dial its own listener, over and over.
	if local, ok := c.LocalAddr().(*net.TCPAddr); ok && unmapAP(local.AddrPort()) == dst {
		h.fail(metrics.ReasonLoop, pod, dir, c, nil)
		return
	}
	src := unmapAP(c.RemoteAddr().(*net.TCPAddr).AddrPort())
	if dir == inpod.Inbound {
		h.inbound(ctx, pod, c, src, dst)
		return
	}
	h.outbound(ctx, pod, c, src, dst)
}

// outbound forwards a connection pod's app made to dst: the source side's
// decision, then connect, relay and account.
func (h *Handler) outbound(ctx context.Context, pod *inpod.Pod, c *net.TCPConn, src, dst netip.AddrPort) {
	plan := h.cfg.Decider.Outbound(pod, src, dst)
	if plan.Refused != nil {
		h.fail(plan.Refused.Reason, pod, inpod.Outbound, c, plan.Refused.Err)
		return
	}
	dctx, cancel := context.WithTimeout(ctx, h.cfg.DialTimeout)
	up, err := h.connect(dctx, pod, src, plan.Service, plan.Targets)
	if err != nil && len(plan.Spill) > 0 && reasonOf(err) == metrics.ReasonMaxConn {
		// Every instance of the canary's version is full: spill over
		// to the other versions rather than fail with capacity left.
		up, err = h.connect(dctx, pod, src, plan.Service, plan.Spill)
	}
	cancel()
	if err != nil {
		h.fail(reasonOf(err), pod, inpod.Outbound, c, err)
		return
	}
	defer up.ticket.Done()
	upc, err := relay.AsConn(up.conn)
	if err != nil {
		up.conn.Close()
		h.fail(metrics.ReasonConnType, pod, inpod.Outbound, c, err)
		return
	}
	up.ticket.Attach(h.revoker(c, src, dst))
	h.log.Debug("forward", "pod", pod.Key(), "src", src.String(), "dst", dst.String(),
		"route", plan.Route.String(), "service", plan.Service, "path", up.path, "upstream", up.conn.RemoteAddr().String())
	idle := plan.IdleTimeout
	if up.idle > 0 {
		idle = up.idle
	}
	h.relay(ctx, metrics.Outbound, up.path, c, upc, idle)
}

// inbound delivers a connection that arrived at pod's inbound listener
// (from outside the mesh) to its original destination dst inside the pod,
// if the destination side's decision admits it.
func (h *Handler) inbound(ctx context.Context, pod *inpod.Pod, c *net.TCPConn, src, dst netip.AddrPort) {
	adm := h.cfg.Decider.Admit(decide.Arrival{From: decide.FromOutside, Dst: dst, Src: src, Pod: pod})
	if adm.Refused != nil {
		h.fail(adm.Refused.Reason, pod, inpod.Inbound, c, adm.Refused.Err)
		return
	}
	defer adm.Ticket.Done()
	h.audit(adm, src, dst)
	dctx, cancel := context.WithTimeout(ctx, h.cfg.DialTimeout)
	up, _, err := h.deliver(dctx, adm, dst)
	cancel()
	if err != nil {
		h.fail(metrics.ReasonDial, pod, inpod.Inbound, c, err)
		return
	}
	adm.Ticket.Attach(h.revoker(c, src, dst))
	h.log.Debug("inbound", "pod", pod.Key(), "src", src.String(), "dst", dst.String())
	h.relay(ctx, metrics.Inbound, metrics.PathPassthrough, c, up, adm.IdleTimeout)
}

// reasonOf is the failure reason of a connection no target took: a
// refusal of the destination side (this node's or the far one's) is
// counted with its own reason, a failed TLS handshake with the
// handshake's, anything else as a dial failure.
func reasonOf(err error) string {
	var (
		ref *decide.Refusal
		he  *tunnel.HandshakeError
		se  *tunnel.StatusError
	)
	switch {
	case errors.As(err, &ref):
		return ref.Reason
	case errors.As(err, &he):
		return identity.Reason(he.Err)
	case errors.As(err, &se) && se.Status == tunnel.StatusDenied:
		return metrics.ReasonDenied
	case errors.As(err, &se) && se.Status == tunnel.StatusFull:
		return metrics.ReasonMaxConn
	}
	return metrics.ReasonDial
}

func network(a netip.Addr) string {
	if a.Is4() || a.Is4In6() {
		return "tcp4"
	}
	return "tcp6"
}

func unmapAP(ap netip.AddrPort) netip.AddrPort {
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
}
