// Package forward is the node daemon's connection handler: it sends each
// connection a pod makes to where the routing table says, and delivers the
// connections other daemons tunnel to this node's pods.
//
//	h, err := forward.New(forward.Config{Pods: agent, Routes: table, Metrics: m})
//	agent.New(agent.Config{Handler: h, ...})
//	srv := h.TunnelServer()              // node-address :15008
//	err = srv.Serve(ctx, ln)
//
// Outbound (a pod's redirected connect), by the route of the original
// destination:
//
//   - passthrough: dialled as is from inside the source pod's netns;
//   - a pod or a service: the candidates (a pod route has one) are dialled,
//     raced when there are several. A candidate on this node is reached
//     through its unix socket when it serves one (path uds), else through a
//     socket the daemon opens inside its netns with the client pod's IP as
//     source (path local); a candidate on another node through the tunnel
//     to that node's daemon (path remote).
//
// Inbound (the pod's :15006, connections that did not come through a
// daemon) is delivered to the original destination inside the pod, with
// the client's address as source, subject to the inbound policy.
package forward

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"time"

	"github.com/meshless/meshless/daemon/agent"
	"github.com/meshless/meshless/daemon/metrics"
	"github.com/meshless/meshless/daemon/origdst"
	"github.com/meshless/meshless/daemon/pump"
	"github.com/meshless/meshless/daemon/routes"
	"github.com/meshless/meshless/daemon/sockmap"
	"github.com/meshless/meshless/daemon/tunnel"
)

// DefaultMeshletDir is where the pods' Meshless folders are on the host:
// <dir>/<namespace>/<pod>/ is what the pod sees as /meshlet.
const DefaultMeshletDir = "/run/meshless/meshlet"

// DefaultDialTimeout bounds a connection attempt (a whole race).
const DefaultDialTimeout = 10 * time.Second

// Failure reasons (meshless_connection_failures_total{reason}) of this
// package; the tunnel server adds tunnel.Reason values.
const (
	// ReasonOrigDst: the original destination could not be read.
	ReasonOrigDst = "origdst"
	// ReasonLoop: the connection was addressed to the daemon's listener.
	ReasonLoop = "loop"
	// ReasonNoEndpoints: the service has no endpoints.
	ReasonNoEndpoints = "no_endpoints"
	// ReasonDial: the destination (every candidate) could not be reached.
	ReasonDial = "dial"
	// ReasonInboundPolicy: the strict inbound policy refused the client.
	ReasonInboundPolicy = "inbound_policy"
	// ReasonConnType: a connection of an unexpected kind (internal error).
	ReasonConnType = "conn_type"
)

// Pods finds the pods registered on this node; *agent.Agent implements it.
type Pods interface {
	PodByIP(ip netip.Addr) (*agent.Pod, bool)
}

// Config is what a Handler needs.
type Config struct {
	// Pods are this node's registered pods. Required.
	Pods Pods
	// Routes is the routing table. Required.
	Routes *routes.Table
	// Metrics, if set, counts connections, failures, races and bytes.
	Metrics *metrics.Metrics
	// Logger defaults to slog.Default().
	Logger *slog.Logger
	// Tunnel dials other nodes' daemons; the zero Client when nil.
	Tunnel *tunnel.Client
	// RaceFanout bounds the candidates dialled at once; 0 means all.
	RaceFanout int
	// RaceStagger delays each further candidate of a race (Happy
	// Eyeballs); 0 dials them all at once.
	RaceStagger time.Duration
	// DialTimeout bounds reaching a destination; DefaultDialTimeout when 0.
	DialTimeout time.Duration
	// IdleTimeout closes connections idle that long; 0 never does.
	IdleTimeout time.Duration
	// MeshletDir holds the pods' Meshless folders; DefaultMeshletDir when
	// empty.
	MeshletDir string
	// InboundPolicy rules inbound connections that did not come through
	// a daemon; Permissive by default.
	InboundPolicy Policy
	// NodeAddrs are this node's own addresses, which Strict admits. Nil
	// admits none.
	NodeAddrs *NodeAddrs
	// Sockmap, if set, forwards TCP↔TCP connections in the kernel (BPF
	// sockmap) instead of copying them in user space; connections with a
	// unix side, or that cannot be paired, are still pumped.
	Sockmap *sockmap.Map
}

// Handler forwards connections; it implements agent.ConnHandler and, for
// the tunnel server, tunnel.Dialer.
type Handler struct {
	cfg Config
	log *slog.Logger
}

var (
	_ agent.ConnHandler = (*Handler)(nil)
	_ tunnel.Dialer     = (*Handler)(nil)
)

// New returns a Handler for cfg.
func New(cfg Config) (*Handler, error) {
	if cfg.Pods == nil || cfg.Routes == nil {
		return nil, errors.New("forward: pods and routes are required")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Tunnel == nil {
		cfg.Tunnel = &tunnel.Client{}
	}
	if cfg.DialTimeout <= 0 {
		cfg.DialTimeout = DefaultDialTimeout
	}
	if cfg.MeshletDir == "" {
		cfg.MeshletDir = DefaultMeshletDir
	}
	return &Handler{cfg: cfg, log: cfg.Logger}, nil
}

// HandleConn implements agent.ConnHandler.
func (h *Handler) HandleConn(ctx context.Context, pod *agent.Pod, dir agent.Direction, c *net.TCPConn) {
	dst, err := origdst.Get(c)
	if err != nil {
		h.fail(ReasonOrigDst, pod, dir, c, err)
		return
	}
	// A connection straight to the listener (not redirected) would make
	// the daemon dial its own listener, over and over.
	if local, ok := c.LocalAddr().(*net.TCPAddr); ok && unmapAP(local.AddrPort()) == dst {
		h.fail(ReasonLoop, pod, dir, c, nil)
		return
	}
	if dir == agent.Inbound {
		h.inbound(ctx, pod, c, dst)
		return
	}
	h.outbound(ctx, pod, c, dst)
}

// pipe pumps between the app's connection and the upstream one and counts
// the connection and its bytes.
func (h *Handler) pipe(ctx context.Context, dir, path string, c pump.Conn, up pump.Conn) {
	if m := h.cfg.Metrics; m != nil {
		m.Connections.WithLabelValues(dir, path).Inc()
	}
	o := pump.Options{IdleTimeout: h.cfg.IdleTimeout}
	if res, ok := h.kernelPipe(ctx, c, up, o); ok {
		if m := h.cfg.Metrics; m != nil {
			m.Bytes.WithLabelValues(dir).Add(float64(res.AToB + res.BToA))
		}
		if res.Err != nil {
			h.log.Debug("connection ended with error", "direction", dir, "path", path, "sockmap", true, "err", res.Err)
		}
		return
	}
	res := pump.Run(ctx, c, up, o)
	if m := h.cfg.Metrics; m != nil {
		m.Bytes.WithLabelValues(dir).Add(float64(res.AToB + res.BToA))
	}
	if res.Err != nil {
		h.log.Debug("connection ended with error", "direction", dir, "path", path, "err", res.Err)
	}
}

// kernelPipe forwards c and up through the sockmap when it is on and both
// are TCP; false when they must be pumped instead (nothing was done then).
// The bytes are the kernel's counts (the verdict program adds up what it
// redirects), so meshless_bytes_total stays exact.
func (h *Handler) kernelPipe(ctx context.Context, c, up pump.Conn, o pump.Options) (sockmap.Result, bool) {
	if h.cfg.Sockmap == nil {
		return sockmap.Result{}, false
	}
	a, ok1 := c.(*net.TCPConn)
	b, ok2 := up.(*net.TCPConn)
	if !ok1 || !ok2 {
		return sockmap.Result{}, false
	}
	p, err := h.cfg.Sockmap.Pair(a, b)
	if err != nil {
		h.log.Debug("sockmap pairing failed, copying in user space", "err", err)
		return sockmap.Result{}, false
	}
	return sockmap.Run(ctx, p, o), true
}

// fail counts and logs a connection that could not be forwarded and resets
// it, so the app sees a refused connection rather than a silent close.
func (h *Handler) fail(reason string, pod *agent.Pod, dir agent.Direction, c *net.TCPConn, err error) {
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

// asPump returns c as a pump.Conn, or an error for a kind of connection
// that cannot half-close.
func asPump(c net.Conn) (pump.Conn, error) {
	pc, ok := c.(pump.Conn)
	if !ok {
		return nil, fmt.Errorf("connection %T cannot half-close", c)
	}
	return pc, nil
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

func sameFamily(a, b netip.Addr) bool {
	return a.Unmap().Is4() == b.Unmap().Is4()
}
