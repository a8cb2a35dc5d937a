// Package routes is the daemon's routing table: for the original destination
// of a redirected connection it answers where the connection goes.
//
//	t := routes.NewTable("n1")
//	if err := t.Update(model); err != nil { ... }
//	switch r := t.Lookup(dst); r.Kind {
//	case routes.KindService:     // race r.Candidates
//	case routes.KindPod:         // r.Pod is the one destination
//	case routes.KindPassthrough: // not in the mesh: connect as is
//	}
//
// The table is built from a neutral Model that every discovery source (the
// YAML registry, the Kubernetes API) converts into. Each Update builds a new
// immutable Snapshot and swaps it in atomically, so Lookup takes no lock and
// does not allocate.
//
// The same snapshot carries what the access-control, canary, maxConn and
// identity checks need, indexed (see package meshlet), so that a
// connection's route and its checks agree:
//
//	s := t.Snapshot()
//	w := s.Workload(src.Addr())          // the source pod, or nil
//	m := s.MeshletOf(w)                  // the Meshlet it joined, or nil
//	to, svc := s.MeshletService(ns, name) // the Meshlet serving Service ns/name
package routes

import (
	"fmt"
	"net/netip"
	"slices"
	"sync/atomic"

	"github.com/meshless/meshless/daemon/meshlet"
)

// Model is the discovery-neutral description of the mesh that a Snapshot is
// built from.
type Model struct {
	// Nodes are the mesh's nodes, each with its tunnel address.
	Nodes []Node
	// Services are the mesh's services with their endpoints.
	Services []Service
	// Workloads are the mesh's pods with their identity and labels, for
	// the checks; sources give them sorted by namespace and name.
	Workloads []meshlet.Workload
	// Meshlets are the valid Meshlets (sources leave the others out),
	// sorted by namespace and name.
	Meshlets []meshlet.Meshlet
}

// Node is one node of the mesh.
type Node struct {
	// Name identifies the node; endpoints refer to it.
	Name string
	// Tunnel is the node daemon's tunnel address (port 15008 by default).
	Tunnel netip.AddrPort
	// PodCIDRs hold the addresses of the pods on this node.
	PodCIDRs []netip.Prefix
}

// Service is one service: virtual IPs and ports that lead to endpoints.
type Service struct {
	// Namespace and Name identify the service.
	Namespace, Name string
	// VIPs are the service's virtual IPs.
	VIPs []netip.Addr
	// Ports are the service's TCP ports.
	Ports []ServicePort
	// Endpoints are the pods that serve the service.
	Endpoints []Endpoint
}

// ServicePort maps a service port to the port the endpoints listen on.
type ServicePort struct {
	// Name is the port's name, possibly empty.
	Name string
	// Port is the port on the VIPs.
	Port uint16
	// TargetPort is the port on the endpoints.
	TargetPort uint16
}

// Endpoint is one pod serving a service.
type Endpoint struct {
	// IP is the pod's address.
	IP netip.Addr
	// Node is the name of the node the pod runs on.
	Node string
	// Labels are the pod's labels, for future subset routing.
	Labels map[string]string
}

// Kind says what kind of destination a Route leads to.
type Kind uint8

const (
	// KindPassthrough is a destination outside the mesh: connect to it as is.
	KindPassthrough Kind = iota
	// KindService is a service VIP and port: race Route.Candidates.
	KindService
	// KindPod is a known mesh pod address: Route.Pod is the destination.
	KindPod
)

// String returns the kind's lowercase name.
func (k Kind) String() string {
	switch k {
	case KindPassthrough:
		return "passthrough"
	case KindService:
		return "service"
	case KindPod:
		return "pod"
	}
	return fmt.Sprintf("kind(%d)", uint8(k))
}

// Candidate is one place a connection can go.
type Candidate struct {
	// Addr is the address to connect to: endpoint IP and target port.
	Addr netip.AddrPort
	// Node is the name of the node the destination runs on.
	Node string
	// Tunnel is that node's tunnel address; invalid if the node is unknown.
	Tunnel netip.AddrPort
	// Local reports whether the destination runs on this node.
	Local bool
	// Labels are the endpoint's labels (nil for KindPod routes).
	Labels map[string]string
}

// String returns "addr@node".
func (c Candidate) String() string { return c.Addr.String() + "@" + c.Node }

// Route is the answer of Lookup.
type Route struct {
	// Kind says which of the other fields are set.
	Kind Kind
	// Service is "namespace/name" for KindService.
	Service string
	// PortName is the service port's name for KindService, possibly empty.
	PortName string
	// Candidates are the service's endpoints for KindService, with the
	// target port resolved. Possibly empty (no endpoints). Shared with the
	// snapshot: callers must not modify it; copy it before reordering.
	Candidates []Candidate
	// Pod is the destination for KindPod: the looked-up address itself.
	Pod Candidate
}

type svcRoute struct {
	service, portName string
	candidates        []Candidate
}

type nodeInfo struct {
	name   string
	tunnel netip.AddrPort
	local  bool
}

// Snapshot is an immutable routing table. The zero value routes everything
// as passthrough.
type Snapshot struct {
	self     string
	vips     map[netip.AddrPort]*svcRoute
	vipAddrs map[netip.Addr]struct{}
	pods     map[netip.Addr]*nodeInfo   // endpoint IPs
	cidrs    map[netip.Prefix]*nodeInfo // pod CIDRs, masked
	bits     []int                      // distinct CIDR lengths, longest first
	nodes    map[string]*nodeInfo
	// byTarget lists, for each endpoint address and target port, the
	// services ("namespace/name") that lead there.
	byTarget map[netip.AddrPort][]string
	// byName is each service's route through its first port, by
	// "namespace/name": what the native API addresses (a service, not a
	// port).
	byName map[string]*svcRoute
	model  Model
	// mesh indexes the workloads and Meshlets; Lookup never reads it.
	mesh *meshlet.Index
}

// Build validates m and returns the snapshot for the node named self (self
// may be absent from m: then no destination is local).
func Build(m Model, self string) (*Snapshot, error) {
	s := &Snapshot{
		self:     self,
		vips:     map[netip.AddrPort]*svcRoute{},
		vipAddrs: map[netip.Addr]struct{}{},
		pods:     map[netip.Addr]*nodeInfo{},
		cidrs:    map[netip.Prefix]*nodeInfo{},
		nodes:    map[string]*nodeInfo{},
		byTarget: map[netip.AddrPort][]string{},
		byName:   map[string]*svcRoute{},
		model:    m,
	}
	if err := s.addNodes(m.Nodes); err != nil {
		return nil, err
	}
	for i, svc := range m.Services {
		if err := s.addService(i, svc); err != nil {
			return nil, err
		}
	}
	mesh, err := meshlet.NewIndex(m.Workloads, m.Meshlets)
	if err != nil {
		return nil, err
	}
	s.mesh = mesh
	return s, nil
}

func (s *Snapshot) addNodes(nodes []Node) error {
	for i, n := range nodes {
		if n.Name == "" {
			return fmt.Errorf("nodes[%d]: empty name", i)
		}
		if _, dup := s.nodes[n.Name]; dup {
			return fmt.Errorf("nodes[%d]: duplicate node %q", i, n.Name)
		}
		ni := &nodeInfo{name: n.Name, tunnel: unmapAP(n.Tunnel), local: n.Name == s.self}
		s.nodes[n.Name] = ni
		for j, p := range n.PodCIDRs {
			if !p.IsValid() {
				return fmt.Errorf("nodes[%d].podCIDRs[%d]: invalid prefix", i, j)
			}
			p = unmapPrefix(p).Masked()
			for q, other := range s.cidrs {
				if q.Overlaps(p) {
					return fmt.Errorf("nodes[%d].podCIDRs[%d]: %s overlaps %s of node %q", i, j, p, q, other.name)
				}
			}
			s.cidrs[p] = ni
			if !slices.Contains(s.bits, p.Bits()) {
				s.bits = append(s.bits, p.Bits())
			}
		}
	}
	slices.SortFunc(s.bits, func(a, b int) int { return b - a })
	return nil
}

// addService adds services[i]: its endpoints, and a route per VIP and port.
func (s *Snapshot) addService(i int, svc Service) error {
	id := svc.Namespace + "/" + svc.Name
	type epInfo struct {
		ip     netip.Addr
		node   *nodeInfo
		labels map[string]string
	}
	eps := make([]epInfo, 0, len(svc.Endpoints))
	for j, ep := range svc.Endpoints {
		if !ep.IP.IsValid() {
			return fmt.Errorf("services[%d].endpoints[%d]: invalid ip", i, j)
		}
		ip := ep.IP.Unmap()
		ni := s.nodes[ep.Node]
		if ni == nil {
			ni = &nodeInfo{name: ep.Node, local: ep.Node != "" && ep.Node == s.self}
		}
		if prev, ok := s.pods[ip]; ok && prev.name != ni.name {
			return fmt.Errorf("services[%d].endpoints[%d]: %s is on node %q and %q", i, j, ip, prev.name, ni.name)
		}
		s.pods[ip] = ni
		eps = append(eps, epInfo{ip, ni, ep.Labels})
	}
	for j, p := range svc.Ports {
		if p.Port == 0 || p.TargetPort == 0 {
			return fmt.Errorf("services[%d].ports[%d]: zero port", i, j)
		}
		cands := make([]Candidate, 0, len(eps))
		for _, e := range eps {
			t := netip.AddrPortFrom(e.ip, p.TargetPort)
			if !slices.Contains(s.byTarget[t], id) {
				s.byTarget[t] = append(s.byTarget[t], id)
			}
			cands = append(cands, Candidate{
				Addr:   netip.AddrPortFrom(e.ip, p.TargetPort),
				Node:   e.node.name,
				Tunnel: e.node.tunnel,
				Local:  e.node.local,
				Labels: e.labels,
			})
		}
		r := &svcRoute{service: id, portName: p.Name, candidates: cands}
		if j == 0 {
			s.byName[id] = r
		}
		for k, vip := range svc.VIPs {
			if !vip.IsValid() {
				return fmt.Errorf("services[%d].vips[%d]: invalid address", i, k)
			}
			ap := netip.AddrPortFrom(vip.Unmap(), p.Port)
			if prev, dup := s.vips[ap]; dup {
				return fmt.Errorf("services[%d]: %s is also service %s", i, ap, prev.service)
			}
			s.vips[ap] = r
		}
	}
	for _, vip := range svc.VIPs {
		s.vipAddrs[vip.Unmap()] = struct{}{}
	}
	return nil
}

// Lookup returns the route for the original destination dst.
//
// A service VIP and port gives KindService. A VIP with a port the service
// does not have gives KindPassthrough (nothing in the mesh serves it). An
// address that is a service endpoint or inside a node's pod CIDRs gives
// KindPod; endpoint membership wins over the CIDRs. Anything else is
// KindPassthrough.
func (s *Snapshot) Lookup(dst netip.AddrPort) Route {
	if s == nil {
		return Route{}
	}
	ip := dst.Addr()
	if ip.Is4In6() {
		ip = ip.Unmap()
		dst = netip.AddrPortFrom(ip, dst.Port())
	}
	if r, ok := s.vips[dst]; ok {
		return Route{Kind: KindService, Service: r.service, PortName: r.portName, Candidates: r.candidates}
	}
	ni, ok := s.pods[ip]
	if !ok {
		for _, b := range s.bits {
			if b > ip.BitLen() {
				continue
			}
			p, err := ip.Prefix(b)
			if err != nil {
				continue
			}
			if ni, ok = s.cidrs[p]; ok {
				break
			}
		}
	}
	if !ok {
		return Route{}
	}
	return Route{Kind: KindPod, Pod: Candidate{Addr: dst, Node: ni.name, Tunnel: ni.tunnel, Local: ni.local}}
}

// Self returns the name of the node the snapshot was built for.
func (s *Snapshot) Self() string {
	if s == nil {
		return ""
	}
	return s.self
}

// Model returns the model the snapshot was built from; callers must not
// modify it.
func (s *Snapshot) Model() Model {
	if s == nil {
		return Model{}
	}
	return s.model
}

// IsVIP reports whether ip is a service VIP (on any port).
func (s *Snapshot) IsVIP(ip netip.Addr) bool {
	if s == nil {
		return false
	}
	_, ok := s.vipAddrs[ip.Unmap()]
	return ok
}

// Node returns the tunnel address of the named node.
func (s *Snapshot) Node(name string) (tunnel netip.AddrPort, ok bool) {
	if s == nil {
		return netip.AddrPort{}, false
	}
	ni, ok := s.nodes[name]
	if !ok {
		return netip.AddrPort{}, false
	}
	return ni.tunnel, true
}

// Service returns the route of the service namespace/name through its
// first port (the native API names a service, not a port), and false when
// there is no such service.
func (s *Snapshot) Service(namespace, name string) (Route, bool) {
	if s == nil {
		return Route{}, false
	}
	r, ok := s.byName[namespace+"/"+name]
	if !ok {
		return Route{}, false
	}
	return Route{Kind: KindService, Service: r.service, PortName: r.portName, Candidates: r.candidates}, true
}

// ServicesAt returns the services ("namespace/name") that have the
// endpoint ep (pod address and target port), in the order of the model;
// shared with the snapshot.
func (s *Snapshot) ServicesAt(ep netip.AddrPort) []string {
	if s == nil {
		return nil
	}
	return s.byTarget[unmapAP(ep)]
}

// Table holds the current Snapshot and swaps it atomically. Its methods are
// safe for concurrent use; Lookup takes no lock.
type Table struct {
	self string
	cur  atomic.Pointer[Snapshot]
}

// NewTable returns a table for the node named self that routes everything
// as passthrough until the first Update.
func NewTable(self string) *Table {
	t := &Table{self: self}
	t.cur.Store(&Snapshot{self: self})
	return t
}

// Update builds a snapshot from m and makes it current. On error the
// current snapshot stays.
func (t *Table) Update(m Model) error {
	s, err := Build(m, t.self)
	if err != nil {
		return fmt.Errorf("build routes: %w", err)
	}
	t.cur.Store(s)
	return nil
}

// Snapshot returns the current snapshot; use it for several lookups that
// must agree with each other.
func (t *Table) Snapshot() *Snapshot { return t.cur.Load() }

// Lookup looks dst up in the current snapshot.
func (t *Table) Lookup(dst netip.AddrPort) Route { return t.cur.Load().Lookup(dst) }

func unmapAP(ap netip.AddrPort) netip.AddrPort {
	if ap.Addr().Is4In6() {
		return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	}
	return ap
}

func unmapPrefix(p netip.Prefix) netip.Prefix {
	if p.Addr().Is4In6() && p.Bits() >= 96 {
		return netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-96)
	}
	return p
}
