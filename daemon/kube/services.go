package kube

import (
	"cmp"
	"maps"
	"net/netip"
	"slices"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"

	"github.com/meshless/meshless/daemon/routes"
)

// slicesByService groups the IPv4 and IPv6 EndpointSlices by
// "namespace/service", each group sorted by name.
func slicesByService(in []*discoveryv1.EndpointSlice) map[string][]*discoveryv1.EndpointSlice {
	out := map[string][]*discoveryv1.EndpointSlice{}
	for _, es := range in {
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
		out[k] = append(out[k], es)
	}
	for _, l := range out {
		slices.SortFunc(l, func(a, b *discoveryv1.EndpointSlice) int { return cmp.Compare(a.Name, b.Name) })
	}
	return out
}

// portInfo is one TCP port of a Service and the target port to use when
// no endpoint resolved one.
type portInfo struct {
	sp       corev1.ServicePort
	fallback uint16
}

// endpoint is one ready address of a Service with the ports its slice
// resolved, by service port name.
type endpoint struct {
	routes.Endpoint
	ports map[string]uint16
}

// service adds s, with its ready endpoints from its slices ess, to the
// model.
func (t *translation) service(s *corev1.Service, ess []*discoveryv1.EndpointSlice, podFn func(string, string) *corev1.Pod) {
	id := s.Namespace + "/" + s.Name
	vips := serviceVIPs(s, t.warnf)
	if len(vips) == 0 {
		return // headless or ExternalName: no VIP to route
	}
	svc := routes.Service{Namespace: s.Namespace, Name: s.Name, VIPs: vips}
	eps := t.readyEndpoints(id, ess, podFn)
	var excluded map[int]bool
	svc.Ports, excluded = t.targetPorts(id, servicePorts(s), eps)

	// VIPs already taken (possible for a moment while one Service is
	// deleted and another created): leave the service out.
	taken := false
	for _, v := range svc.VIPs {
		for _, p := range svc.Ports {
			ap := netip.AddrPortFrom(v, p.Port)
			if other, dup := t.usedVIP[ap]; dup {
				t.warnf("service %s: %s is also service %s; service left out", id, ap, other)
				taken = true
			}
		}
	}
	if taken {
		return
	}
	for _, v := range svc.VIPs {
		for _, p := range svc.Ports {
			t.usedVIP[netip.AddrPortFrom(v, p.Port)] = id
		}
	}

	for i, e := range eps {
		if excluded[i] {
			continue
		}
		if prev, ok := t.ipNode[e.IP]; ok && prev != e.Node {
			t.warnf("service %s: endpoint %s on node %q is also on node %q; left out", id, e.IP, e.Node, prev)
			continue
		}
		t.ipNode[e.IP] = e.Node
		svc.Endpoints = append(svc.Endpoints, e.Endpoint)
	}
	slices.SortFunc(svc.Endpoints, func(a, b routes.Endpoint) int { return a.IP.Compare(b.IP) })
	t.model.Services = append(t.model.Services, svc)
}

// servicePorts returns s's valid, distinct TCP ports.
func servicePorts(s *corev1.Service) []portInfo {
	var ports []portInfo
	seen := map[int32]bool{}
	for _, sp := range s.Spec.Ports {
		if sp.Protocol != "" && sp.Protocol != corev1.ProtocolTCP {
			continue
		}
		if sp.Port <= 0 || sp.Port > 65535 || seen[sp.Port] {
			continue // invalid, or a duplicate the API would not accept
		}
		seen[sp.Port] = true
		fb := uint16(sp.Port)
		if sp.TargetPort.IntVal > 0 && sp.TargetPort.IntVal <= 65535 && sp.TargetPort.StrVal == "" {
			fb = uint16(sp.TargetPort.IntVal)
		}
		ports = append(ports, portInfo{sp, fb})
	}
	return ports
}

// readyEndpoints returns the ready addresses of the slices of service id,
// one per address, with the ports their slice resolved.
func (t *translation) readyEndpoints(id string, ess []*discoveryv1.EndpointSlice, podFn func(string, string) *corev1.Pod) []endpoint {
	var eps []endpoint
	seen := map[netip.Addr]int{}
	for _, es := range ess {
		resolved := resolvedPorts(es)
		for _, e := range es.Endpoints {
			if e.Conditions.Ready != nil && !*e.Conditions.Ready {
				continue
			}
			var pod *corev1.Pod
			if ref := e.TargetRef; ref != nil && ref.Kind == "Pod" && podFn != nil {
				pod = podFn(cmp.Or(ref.Namespace, es.Namespace), ref.Name)
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
					t.warnf("service %s: endpoint address %q: %v", id, a, err)
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
				eps = append(eps, endpoint{routes.Endpoint{IP: ip, Node: node, Labels: labels}, resolved})
			}
		}
	}
	return eps
}

// resolvedPorts returns the TCP port numbers es resolved, by service port
// name.
func resolvedPorts(es *discoveryv1.EndpointSlice) map[string]uint16 {
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
	return resolved
}

// targetPorts picks one target port per service port, the one most
// endpoints resolved, and returns the indexes of the endpoints that
// resolved another one (left out, with a warning).
func (t *translation) targetPorts(id string, ports []portInfo, eps []endpoint) ([]routes.ServicePort, map[int]bool) {
	var out []routes.ServicePort
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
				t.warnf("service %s: endpoint %s serves port %q on %d, the others on %d; left out", id, e.IP, pi.sp.Name, n, target)
			}
		}
		out = append(out, routes.ServicePort{Name: pi.sp.Name, Port: uint16(pi.sp.Port), TargetPort: target})
	}
	return out, excluded
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
