package kube

import (
	"cmp"
	"fmt"
	"net/netip"
	"slices"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"

	"github.com/meshless/meshless/daemon/routes"
)

// Objects are the Kubernetes objects a model is translated from.
type Objects struct {
	// Services are all the cluster's Services.
	Services []*corev1.Service
	// EndpointSlices are all the cluster's EndpointSlices; each belongs to
	// the Service named by its kubernetes.io/service-name label.
	EndpointSlices []*discoveryv1.EndpointSlice
	// Nodes are all the cluster's Nodes.
	Nodes []*corev1.Node
	// Pod returns the pod namespace/name, or nil if unknown. May be nil.
	// Endpoints take their labels (and their node, when the slice does not
	// name one) from it.
	Pod func(namespace, name string) *corev1.Pod
	// Pods are all the cluster's Pods, for the model's Workloads.
	Pods []*corev1.Pod
	// Meshlets are all the cluster's Meshlets.
	Meshlets []*MeshletObject
}

// Translate converts Kubernetes objects into the routing table's model.
//
//   - Nodes: tunnel address InternalIP:tunnelPort (the first InternalIP,
//     else the first ExternalIP; none leaves the tunnel invalid), pod CIDRs
//     from spec.podCIDRs (spec.podCIDR when the list is empty).
//   - Services: the ClusterIPs are the VIPs; headless Services (clusterIP
//     None) and ExternalName Services have none and are left out. Only TCP
//     ports are kept.
//   - Endpoints: the READY endpoints (conditions.ready not false) of the
//     Service's IPv4 and IPv6 EndpointSlices, one per address, with the
//     endpoint's nodeName and the labels of the pod its targetRef names.
//   - Target ports: each service port's target port is the number the
//     EndpointSlices resolved for it (a named targetPort may resolve to a
//     different number per pod). The model has one target port per service
//     port, so the number most endpoints resolved wins and endpoints that
//     resolved another number are left out of the service (each gives a
//     warning). Without endpoints, the numeric spec targetPort is used, or
//     the service port when it is named (no candidate uses it then).
//   - Workloads: see workloads.go; Meshlets: see meshlets.go.
//
// The result always builds (routes.Build): inconsistencies the API can show
// for a moment (an address on two nodes, overlapping pod CIDRs, a VIP of two
// Services, a pod address reused) are resolved by leaving the later item
// out, with a warning. Everything is sorted, so equal inputs give equal
// models.
func Translate(in Objects, tunnelPort uint16) (routes.Model, []string) {
	t := translate(in, tunnelPort)
	return t.model, t.warn
}

// translation is one Translate in progress, with what later items are
// checked against.
type translation struct {
	model routes.Model
	warn  []string
	// meshlets says, per Meshlet object, whether it is in the model and
	// why not (for the objects' status).
	meshlets []meshletResult

	usedVIP map[netip.AddrPort]string // VIP:port -> "namespace/service"
	ipNode  map[netip.Addr]string     // endpoint address -> node, across services
}

func translate(in Objects, tunnelPort uint16) *translation {
	t := &translation{usedVIP: map[netip.AddrPort]string{}, ipNode: map[netip.Addr]string{}}
	t.nodes(in.Nodes, tunnelPort)
	bySvc := slicesByService(in.EndpointSlices)
	services := slices.Clone(in.Services)
	slices.SortFunc(services, func(a, b *corev1.Service) int {
		return cmp.Or(cmp.Compare(a.Namespace, b.Namespace), cmp.Compare(a.Name, b.Name))
	})
	for _, s := range services {
		if s != nil {
			t.service(s, bySvc[s.Namespace+"/"+s.Name], in.Pod)
		}
	}
	t.workloads(in.Pods)
	t.translateMeshlets(in.Meshlets)
	return t
}

func (t *translation) warnf(format string, args ...any) {
	t.warn = append(t.warn, fmt.Sprintf(format, args...))
}

func (t *translation) nodes(in []*corev1.Node, tunnelPort uint16) {
	nodes := slices.Clone(in)
	slices.SortFunc(nodes, func(a, b *corev1.Node) int { return cmp.Compare(a.Name, b.Name) })
	var cidrs []netip.Prefix
	cidrOwner := map[netip.Prefix]string{}
	for _, n := range nodes {
		if n == nil || n.Name == "" {
			continue
		}
		node := routes.Node{Name: n.Name}
		if ip, ok := nodeAddress(n); ok {
			node.Tunnel = netip.AddrPortFrom(ip, tunnelPort)
		}
		specCIDRs := n.Spec.PodCIDRs
		if len(specCIDRs) == 0 && n.Spec.PodCIDR != "" {
			specCIDRs = []string{n.Spec.PodCIDR}
		}
		for _, s := range specCIDRs {
			p, err := netip.ParsePrefix(s)
			if err != nil {
				t.warnf("node %s: pod CIDR %q: %v", n.Name, s, err)
				continue
			}
			p = p.Masked()
			if i := slices.IndexFunc(cidrs, p.Overlaps); i >= 0 {
				t.warnf("node %s: pod CIDR %s overlaps %s of node %s; left out", n.Name, p, cidrs[i], cidrOwner[cidrs[i]])
				continue
			}
			cidrs = append(cidrs, p)
			cidrOwner[p] = n.Name
			node.PodCIDRs = append(node.PodCIDRs, p)
		}
		t.model.Nodes = append(t.model.Nodes, node)
	}
}

// nodeAddress returns the node's first InternalIP, else its first
// ExternalIP.
func nodeAddress(n *corev1.Node) (netip.Addr, bool) {
	for _, t := range []corev1.NodeAddressType{corev1.NodeInternalIP, corev1.NodeExternalIP} {
		for _, a := range n.Status.Addresses {
			if a.Type != t {
				continue
			}
			if ip, err := netip.ParseAddr(a.Address); err == nil {
				return ip.Unmap(), true
			}
		}
	}
	return netip.Addr{}, false
}
