// Package decide is where the node daemon decides the fate of every
// connection: once on the source side, when a pod of this node opens it,
// and once on the destination side, when it is about to be delivered to a
// pod of this node. Every path a connection can take passes through these
// two functions and nowhere else, so a check added here (access control,
// connection limits, canary weights) holds on all of them.
//
//	d := decide.New(decide.Config{Routes: table, Pods: pods})
//
//	// Source side: an app in pod p connected to dst (its original
//	// destination); the plan says what to connect to, on which path, or why
//	// not.
//	plan := d.Outbound(p, src, dst)
//	if plan.Refused != nil { reset the client; count plan.Refused.Reason }
//	for _, t := range plan.Targets { ... } // raced when more than one
//
//	// Destination side: a connection for dst arrives from a pod of this
//	// node (a local target of a plan), from another node's daemon (the
//	// tunnel), or from outside the mesh (the pod's inbound capture).
//	adm := d.Admit(decide.Arrival{From: decide.FromPeer, Dst: dst, Src: src})
//	if adm.Refused != nil { ... }
//	// adm.Pod, adm.Socket, adm.Bind say how to deliver it
//
// The decisions are pure: they read the routing table and the registered
// pods and never touch a socket, so they are tested without namespaces.
package decide

import (
	"fmt"
	"net/netip"
	"sync"
	"time"

	"github.com/meshless/meshless/daemon/inpod"
	"github.com/meshless/meshless/daemon/meshletdir"
	"github.com/meshless/meshless/daemon/metrics"
	"github.com/meshless/meshless/daemon/routes"
)

// Pods finds the pods registered on this node; *inpod.Registry implements
// it.
type Pods interface {
	// PodByIP returns the registered pod that owns ip.
	PodByIP(ip netip.Addr) (*inpod.Pod, bool)
}

// AddrSet is a set of addresses.
type AddrSet interface {
	// Contains reports whether ip is in the set.
	Contains(ip netip.Addr) bool
}

// Config is what a Decider needs.
type Config struct {
	// Routes is the routing table. Required.
	Routes *routes.Table
	// Pods are this node's registered pods. Required.
	Pods Pods
	// Meshlets says where the pods' Meshless folders are on the host
	// (their unix sockets); meshletdir.Default's layout when zero.
	Meshlets meshletdir.Layout
	// InboundPolicy rules connections that arrive from outside the mesh.
	InboundPolicy Policy
	// NodeAddrs are this node's own addresses, which Strict admits
	// (*NodeAddrs); nil admits none.
	NodeAddrs AddrSet
	// IdleTimeout closes connections idle that long; 0 never.
	IdleTimeout time.Duration
	// AccessPolicy says what to do with the access control Meshlets
	// declare; Enforce by default.
	AccessPolicy AccessPolicy
}

// Decider makes the decisions. Its methods are safe for concurrent use.
type Decider struct {
	cfg Config

	// live are the governed connections that are open (Ticket).
	liveMu sync.Mutex
	live   map[*Ticket]struct{}
	// limits counts them per pod and service, for maxConn.
	limits limits
}

// New returns a Decider for cfg.
func New(cfg Config) (*Decider, error) {
	if cfg.Routes == nil || cfg.Pods == nil {
		return nil, fmt.Errorf("decide: routes and pods are required")
	}
	return &Decider{cfg: cfg, live: map[*Ticket]struct{}{}}, nil
}

// Refusal says why a connection is not forwarded. The client's connection
// is reset.
type Refusal struct {
	// Reason is the meshless_connection_failures_total label.
	Reason string
	// Err says what happened, for the log line.
	Err error
}

// FailureReason returns Reason (tunnel.Reasoner: a refusal at the far end
// of a tunnel is counted with it).
func (r *Refusal) FailureReason() string { return r.Reason }

// Error returns the refusal as text.
func (r *Refusal) Error() string {
	if r.Err == nil {
		return r.Reason
	}
	return r.Reason + ": " + r.Err.Error()
}

func refuse(reason string, format string, args ...any) *Refusal {
	return &Refusal{Reason: reason, Err: fmt.Errorf(format, args...)}
}

// Via is how a target is reached from the source pod's node.
type Via uint8

const (
	// ViaDirect dials the target from inside the source pod's netns, as
	// the pod would without the mesh: destinations outside the mesh, and
	// mesh addresses the daemon cannot reach itself.
	ViaDirect Via = iota
	// ViaLocal delivers to a pod of this node; Admit decides how.
	ViaLocal
	// ViaTunnel goes through the tunnel to the target node's daemon.
	ViaTunnel
)

// String returns "direct", "local" or "tunnel".
func (v Via) String() string {
	switch v {
	case ViaLocal:
		return "local"
	case ViaTunnel:
		return "tunnel"
	}
	return "direct"
}

// Target is one place a connection can go.
type Target struct {
	// Addr is the address to connect to: the endpoint and its target port
	// for a service, the original destination otherwise.
	Addr netip.AddrPort
	// Node is the node the target runs on; empty when unknown.
	Node string
	// Via says how to reach it.
	Via Via
	// Tunnel is Node's tunnel address, for ViaTunnel.
	Tunnel netip.AddrPort
	// Priority orders a race: lower values launch first; equal ones in
	// random order.
	Priority int
	// labels are the service endpoint's labels (its version), shared
	// with the routing table.
	labels map[string]string
}

// String returns "addr@node".
func (t Target) String() string { return t.Addr.String() + "@" + t.Node }

// Plan is the source side's decision for one connection.
type Plan struct {
	// Route is the kind of destination the routing table found.
	Route routes.Kind
	// Service is "namespace/name" when the destination is a service.
	Service string
	// Targets are what to connect to, raced when there are several.
	Targets []Target
	// Spill are the targets to race when every one of Targets refused as
	// full (maxConn): the instances of the canary's other versions.
	Spill []Target
	// IdleTimeout closes the connection when no byte moved that long; 0
	// never.
	IdleTimeout time.Duration
	// Refused, when set, says why the connection is not forwarded.
	Refused *Refusal
}

// Priorities of a race: a pod of this node is cheaper to reach than one
// behind a tunnel (no node network, no peer daemon), and when it is healthy
// it also connects first; launching it first means a race limited by
// --race-fanout or --race-stagger tries it before paying for a tunnel.
const (
	priorityLocal  = 0
	priorityRemote = 1
)

// Outbound decides where a connection that an app of pod opened to dst
// goes. src is the app's address.
func (d *Decider) Outbound(pod *inpod.Pod, src, dst netip.AddrPort) Plan {
	snap := d.cfg.Routes.Snapshot()
	r := snap.Lookup(dst)
	p := Plan{Route: r.Kind, Service: r.Service, IdleTimeout: d.cfg.IdleTimeout}
	switch r.Kind {
	case routes.KindService:
		if len(r.Candidates) == 0 {
			p.Refused = refuse(metrics.ReasonNoEndpoints, "service %s has no endpoints", r.Service)
			return p
		}
		p.Targets = make([]Target, 0, len(r.Candidates))
		for _, c := range r.Candidates {
			p.Targets = append(p.Targets, d.target(c))
		}
		p.Targets, p.Spill, p.Refused = canary(snap, r.Service, p.Targets)
	case routes.KindPod:
		p.Targets = []Target{d.target(r.Pod)}
	default:
		p.Targets = []Target{{Addr: dst, Via: ViaDirect}}
	}
	return p
}

// target turns a routing candidate into a target: a pod of this node that
// is registered here is delivered locally, a pod of a node with a tunnel
// address goes through the tunnel, anything else (a local address of no
// registered pod, a node without a tunnel) is dialled directly from the
// source pod, over the pod network.
func (d *Decider) target(c routes.Candidate) Target {
	t := Target{Addr: c.Addr, Node: c.Node, Via: ViaDirect, Priority: priorityRemote, labels: c.Labels}
	switch {
	case c.Local:
		if _, ok := d.cfg.Pods.PodByIP(c.Addr.Addr()); ok {
			t.Via, t.Priority = ViaLocal, priorityLocal
		}
	case c.Tunnel.IsValid():
		t.Via, t.Tunnel = ViaTunnel, c.Tunnel
	}
	return t
}

// Native decides where a native API request of pod's app goes: the
// server service service of the Meshlet namespace/meshlet (its Kubernetes
// Service of that name, through its first port), with the same targets,
// canary and refusals as a connection to the service's VIP. The
// destination side's decision (Admit) follows for each target, as for any
// connection.
func (d *Decider) Native(pod *inpod.Pod, namespace, meshletName, service string) Plan {
	snap := d.cfg.Routes.Snapshot()
	p := Plan{Route: routes.KindService, Service: namespace + "/" + service, IdleTimeout: d.cfg.IdleTimeout}
	m := snap.Meshlet(namespace, meshletName)
	if m == nil || m.Service(service) == nil {
		p.Refused = refuse(metrics.ReasonUnknownService, "no Meshlet %s/%s serving %s", namespace, meshletName, service)
		return p
	}
	r, ok := snap.Service(namespace, service)
	if !ok {
		p.Refused = refuse(metrics.ReasonUnknownService, "Meshlet %s/%s serves %s, but there is no Service %s/%s", namespace, meshletName, service, namespace, service)
		return p
	}
	if len(r.Candidates) == 0 {
		p.Refused = refuse(metrics.ReasonNoEndpoints, "service %s has no endpoints", r.Service)
		return p
	}
	for _, c := range r.Candidates {
		p.Targets = append(p.Targets, d.target(c))
	}
	p.Targets, p.Spill, p.Refused = canary(snap, r.Service, p.Targets)
	return p
}
