package kube

import (
	"cmp"
	"fmt"
	"maps"
	"net/netip"
	"slices"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"

	"github.com/meshless/meshless/daemon/routes"
)

// DefaultTunnelPort is the port of the node daemons' tunnel listener.
const DefaultTunnelPort = 15008

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
//
// The result always builds (routes.Build): inconsistencies the API can show
// for a moment (an address on two nodes, overlapping pod CIDRs, a VIP of two
// Services) are resolved by leaving the later item out, with a warning.
// Everything is sorted, so equal inputs give equal models.
func Translate(in Objects, tunnelPort uint16) (routes.Model, []string) {
	var m routes.Model
	var warn []string
	warnf := func(format string, args ...any) { warn = append(warn, fmt.Sprintf(format, args...)) }

	// Nodes.
	nodes := slices.Clone(in.Nodes)
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
				warnf("node %s: pod CIDR %q: %v", n.Name, s, err)
				continue
			}
			p = p.Masked()
			if i := slices.IndexFunc(cidrs, p.Overlaps); i >= 0 {
				warnf("node %s: pod CIDR %s overlaps %s of node %s; left out", n.Name, p, cidrs[i], cidrOwner[cidrs[i]])
				continue
			}
			cidrs = append(cidrs, p)
			cidrOwner[p] = n.Name
			node.PodCIDRs = append(node.PodCIDRs, p)
		}
		m.Nodes = append(m.Nodes, node)
	}

	// EndpointSlices by "namespace/service".
	slicesBySvc := map[string][]*discoveryv1.EndpointSlice{}
	for _, es := range in.EndpointSlices {
		if es == nil {
			continue
		}
		svc := es.Labels[discoveryv1.LabelServiceName]
		if svc == "" {
			continue
		}
		if es.AddressType != discoveryv1.AddressTypeIPv4 && es.AddressType != discoveryv1.AddressTypeIPv6 {
			continue
		}
		k := es.Namespace + "/" + svc
		slicesBySvc[k] = append(slicesBySvc[k], es)
	}
	for _, l := range slicesBySvc {
		slices.SortFunc(l, func(a, b *discoveryv1.EndpointSlice) int { return cmp.Compare(a.Name, b.Name) })
	}

	services := slices.Clone(in.Services)
	slices.SortFunc(services, func(a, b *corev1.Service) int {
		return cmp.Or(cmp.Compare(a.Namespace, b.Namespace), cmp.Compare(a.Name, b.Name))
	})
	usedVIP := map[netip.AddrPort]string{}
	ipNode := map[netip.Addr]string{} // endpoint address -> node, across services
	for _, s := range services {
		if s == nil {
			continue
		}
		id := s.Namespace + "/" + s.Name
		vips := serviceVIPs(s, warnf)
		if len(vips) == 0 {
			continue // headless or ExternalName: no VIP to route
		}
		svc := routes.Service{Namespace: s.Namespace, Name: s.Name, VIPs: vips}

		// The service's TCP ports.
		type portInfo struct {
			sp       corev1.ServicePort
			fallback uint16
		}
		var ports []portInfo
		seenPort := map[int32]bool{}
		for _, sp := range s.Spec.Ports {
			if sp.Protocol != "" && sp.Protocol != corev1.ProtocolTCP {
				continue
			}
			if sp.Port <= 0 || sp.Port > 65535 || seenPort[sp.Port] {
				continue // invalid, or a duplicate the API would not accept
			}
			seenPort[sp.Port] = true
			fb := uint16(sp.Port)
			if sp.TargetPort.IntVal > 0 && sp.TargetPort.IntVal <= 65535 && sp.TargetPort.StrVal == "" {
				fb = uint16(sp.TargetPort.IntVal)
			}
			ports = append(ports, portInfo{sp, fb})
		}

		// The ready endpoints, one per address, with the ports their slice
		// resolved (by service port name).
		type ep struct {
			routes.Endpoint
			ports map[string]uint16
		}
		var eps []ep
		seen := map[netip.Addr]int{}
		for _, es := range slicesBySvc[id] {
			resolved := map[string]uint16{}
			for _, p := range es.Ports {
				if p.Port == nil || *p.Port <= 0 || *p.Port > 65535 {
					continue
				}
				if p.Protocol != nil && *p.Protocol != corev1.ProtocolTCP {
					continue
				}
				name := ""
				if p.Name != nil {
					name = *p.Name
				}
				resolved[name] = uint16(*p.Port)
			}
			for _, e := range es.Endpoints {
				if e.Conditions.Ready != nil && !*e.Conditions.Ready {
					continue
				}
				var pod *corev1.Pod
				if ref := e.TargetRef; ref != nil && ref.Kind == "Pod" && in.Pod != nil {
					ns := cmp.Or(ref.Namespace, es.Namespace)
					pod = in.Pod(ns, ref.Name)
				}
				node := ""
				if e.NodeName != nil {
					node = *e.NodeName
				} else if pod != nil {
					node = pod.Spec.NodeName
				}
				var labels map[string]string
				if pod != nil && len(pod.Labels) > 0 {
					labels = maps.Clone(pod.Labels)
				}
				for _, a := range e.Addresses {
					ip, err := netip.ParseAddr(a)
					if err != nil {
						warnf("service %s: endpoint address %q: %v", id, a, err)
						continue
					}
					ip = ip.Unmap()
					if i, dup := seen[ip]; dup {
						// The same address in two slices (the controller
						// moving it): keep the first, fill in a node.
						if eps[i].Node == "" {
							eps[i].Node = node
						}
						continue
					}
					seen[ip] = len(eps)
					eps = append(eps, ep{routes.Endpoint{IP: ip, Node: node, Labels: labels}, resolved})
				}
			}
		}

		// One target port per service port: the one most endpoints resolved.
		excluded := map[int]bool{}
		for _, pi := range ports {
			count := map[uint16]int{}
			for _, e := range eps {
				if n, ok := e.ports[pi.sp.Name]; ok {
					count[n]++
				}
			}
			target := pi.fallback
			best := 0
			for n, c := range count {
				if c > best || (c == best && n < target) {
					target, best = n, c
				}
			}
			for i, e := range eps {
				if n, ok := e.ports[pi.sp.Name]; ok && n != target && !excluded[i] {
					excluded[i] = true
					warnf("service %s: endpoint %s serves port %q on %d, the others on %d; left out", id, e.IP, pi.sp.Name, n, target)
				}
			}
			svc.Ports = append(svc.Ports, routes.ServicePort{Name: pi.sp.Name, Port: uint16(pi.sp.Port), TargetPort: target})
		}

		// VIPs already taken (possible for a moment while one Service is
		// deleted and another created): leave the port out.
		for _, v := range svc.VIPs {
			for _, p := range svc.Ports {
				ap := netip.AddrPortFrom(v, p.Port)
				if other, dup := usedVIP[ap]; dup {
					warnf("service %s: %s is also service %s; service left out", id, ap, other)
					svc.VIPs = nil
				}
			}
		}
		if svc.VIPs == nil {
			continue
		}
		for _, v := range svc.VIPs {
			for _, p := range svc.Ports {
				usedVIP[netip.AddrPortFrom(v, p.Port)] = id
			}
		}

		for i, e := range eps {
			if excluded[i] {
				continue
			}
			if prev, ok := ipNode[e.IP]; ok && prev != e.Node {
				warnf("service %s: endpoint %s on node %q is also on node %q; left out", id, e.IP, e.Node, prev)
				continue
			}
			ipNode[e.IP] = e.Node
			svc.Endpoints = append(svc.Endpoints, e.Endpoint)
		}
		slices.SortFunc(svc.Endpoints, func(a, b routes.Endpoint) int { return a.IP.Compare(b.IP) })
		m.Services = append(m.Services, svc)
	}
	return m, warn
}

func serviceVIPs(s *corev1.Service, warnf func(string, ...any)) []netip.Addr {
	ips := s.Spec.ClusterIPs
	if len(ips) == 0 && s.Spec.ClusterIP != "" {
		ips = []string{s.Spec.ClusterIP}
	}
	var vips []netip.Addr
	for _, v := range ips {
		if v == "" || v == corev1.ClusterIPNone {
			continue
		}
		ip, err := netip.ParseAddr(v)
		if err != nil {
			warnf("service %s/%s: cluster IP %q: %v", s.Namespace, s.Name, v, err)
			continue
		}
		ip = ip.Unmap()
		if !slices.Contains(vips, ip) {
			vips = append(vips, ip)
		}
	}
	return vips
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
