package decide

import (
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/meshless/meshless/daemon/inpod"
	"github.com/meshless/meshless/daemon/metrics"
	"github.com/meshless/meshless/daemon/routes"
)

// From says where a connection being admitted comes from.
type From uint8

const (
	// FromLocal is a connection from a pod of this node: a local target
	// of a Plan.
	FromLocal From = iota
	// FromPeer is a connection another node's daemon tunnelled here.
	FromPeer
	// FromOutside is a connection into a pod that did not come through a
	// daemon (the pod's inbound capture): clients outside the mesh,
	// kubelet probes.
	FromOutside
)

// String returns "local", "peer" or "outside".
func (f From) String() string {
	switch f {
	case FromPeer:
		return "peer"
	case FromOutside:
		return "outside"
	}
	return "local"
}

// Arrival is a connection about to be delivered to a pod of this node.
type Arrival struct {
	// From says where it comes from.
	From From
	// Dst is its destination: an address of a pod of this node.
	Dst netip.AddrPort
	// Src is the client's address; invalid when unknown.
	Src netip.AddrPort
	// Service is the name of the service the client addressed, empty for
	// a pod address: it names the pod's unix socket.
	Service string
	// Pod is the destination pod when the caller knows it already (the
	// pod whose inbound capture accepted the connection); nil makes Admit
	// find it by Dst.
	Pod *inpod.Pod
	// Peer is the node the tunnel's mutual TLS authenticated, for
	// FromPeer: Src must be an address of one of its pods.
	Peer string
	// SrcPod is the client's pod, for FromLocal: its identity is that of
	// the pod whose netns accepted the connection.
	SrcPod *inpod.Pod
}

// Admission is the destination side's decision for one connection.
type Admission struct {
	// Pod is the destination pod.
	Pod *inpod.Pod
	// Socket is the host path of the pod's unix socket to try first;
	// empty to dial Dst inside the pod's netns at once. A socket that does
	// not exist means the pod does not serve one: dial Dst.
	Socket string
	// Bind is the source address to give the connection inside the pod's
	// netns (the client's, so the app sees who called); invalid for none.
	Bind netip.Addr
	// IdleTimeout closes the connection when no byte moved that long; 0
	// never.
	IdleTimeout time.Duration
	// Ticket, for a connection a Meshlet governs, lets a policy change
	// close it later: Attach it once delivered, Done when it ends. Nil
	// (and still safe to call) otherwise.
	Ticket *Ticket
	// Audited, under AccessPolicy Audit, is the refusal that Enforce would
	// have made; the connection goes through.
	Audited *Refusal
	// Refused, when set, says why the connection is not delivered.
	Refused *Refusal
}

// Admit decides whether and how a connection is delivered to a pod of this
// node.
func (d *Decider) Admit(a Arrival) Admission {
	adm := Admission{Pod: a.Pod, IdleTimeout: d.cfg.IdleTimeout}
	if adm.Pod == nil {
		p, ok := d.cfg.Pods.PodByIP(a.Dst.Addr())
		if !ok {
			adm.Refused = refuse(metrics.ReasonForbidden, "%s is not a pod of this node", a.Dst.Addr())
			return adm
		}
		adm.Pod = p
	}
	if a.From == FromPeer {
		if r := d.checkPeerSource(a.Peer, a.Src.Addr()); r != nil {
			adm.Refused = r
			return adm
		}
	}
	if a.From == FromOutside {
		if d.cfg.InboundPolicy == Strict && (d.cfg.NodeAddrs == nil || !d.cfg.NodeAddrs.Contains(a.Src.Addr())) {
			adm.Refused = refuse(metrics.ReasonInboundPolicy, "strict inbound policy: %s is not this node", a.Src.Addr())
			return adm
		}
	} else {
		// Outside clients reach the app's TCP port as without the mesh;
		// mesh clients may be served by the pod's unix socket.
		spec := adm.Pod.Spec()
		// A layout field the registration lacks (no UID) or a name with
		// path tricks: no socket, the pod's TCP address.
		adm.Socket, _ = d.cfg.Meshlets.ServerSocket(spec.Namespace, spec.Name, spec.UID, socketName(a.Service, a.Dst.Port()))
	}
	if r := d.govern(&adm, a); r != nil {
		adm.Refused = r
		return adm
	}
	if src := a.Src.Addr(); src.IsValid() && src.Unmap().Is4() == a.Dst.Addr().Unmap().Is4() && src.Unmap() != a.Dst.Addr().Unmap() {
		adm.Bind = src.Unmap()
	}
	return adm
}

// govern applies what the Meshlets say of an arrival whose destination
// serves one of their services: access control (under Enforce it returns
// the refusal of a connection they do not allow; under Audit the denial
// goes to adm.Audited), the service's idleTimeout, and its maxConn (a
// full pod refuses; a race then takes another instance). A governed,
// admitted connection gets a Ticket, which holds its maxConn slot and lets
// a policy change close it.
func (d *Decider) govern(adm *Admission, a Arrival) *Refusal {
	acc := access{from: a.From, dst: a.Dst, service: a.Service, client: a.Src.Addr()}
	switch a.From {
	case FromLocal:
		if a.SrcPod != nil {
			acc.srcIPs = a.SrcPod.Spec().IPs
		}
	case FromPeer:
		acc.srcIPs = []netip.Addr{a.Src.Addr()}
	}
	v := check(d.cfg.Routes.Snapshot(), d.cfg.NodeAddrs, acc)
	if !v.governed {
		return nil
	}
	if !v.allowed && d.cfg.AccessPolicy != Off {
		r := &Refusal{Reason: metrics.ReasonDenied, Err: errors.New(v.why)}
		if d.cfg.AccessPolicy != Audit {
			return r
		}
		adm.Audited = r
	}
	idle, err := v.service.IdleTimeoutDuration()
	if err == nil && idle > 0 {
		adm.IdleTimeout = idle
	}
	slot := slotKey{v.dst.Key(), v.service.Name}
	if !d.limits.take(slot, v.service.MaxConn) {
		return full(v.dst.Key(), v.service)
	}
	adm.Ticket = d.ticket(acc, slot, v.service.MaxConn > 0 || idle > 0)
	return nil
}

// checkPeerSource trusts nothing a peer claims that this node can check:
// the source address in a tunnel's header must belong to a pod of the
// node whose certificate the handshake verified, in this node's own view
// of the cluster (the routing table: service endpoints and the nodes' pod
// CIDRs). Otherwise a node could speak for another node's pods, whose
// address the delivery would then bind.
func (d *Decider) checkPeerSource(peer string, src netip.Addr) *Refusal {
	if peer == "" || !src.IsValid() {
		return refuse(metrics.ReasonPeerSource, "tunnel from %q without an authenticated peer or a source address", peer)
	}
	if w := d.cfg.Routes.Snapshot().Workload(src); w != nil {
		if w.Node != peer {
			return refuse(metrics.ReasonPeerSource, "node %s claims source %s, which is pod %s of node %s", peer, src, w.Key(), w.Node)
		}
		return nil
	}
	r := d.cfg.Routes.Lookup(netip.AddrPortFrom(src.Unmap(), 1))
	if r.Kind != routes.KindPod || r.Pod.Node != peer {
		where := "no pod of any node"
		if r.Kind == routes.KindPod {
			where = "a pod of node " + r.Pod.Node
		}
		return refuse(metrics.ReasonPeerSource, "node %s claims source %s, which is %s", peer, src, where)
	}
	return nil
}

// The native convention: a pod that serves a unix socket for a service
// puts it at /meshlet/server/<name> (package meshletdir says where that is
// on the host). <name> is the service's name for connections to a service
// and the target port number for connections to the pod's address.

// socketName returns the socket file name a connection looks for: the
// service name when there is one, else the port number.
func socketName(service string, port uint16) string {
	if service != "" {
		return service
	}
	return strconv.Itoa(int(port))
}

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
