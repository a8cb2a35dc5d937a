package registry

import (
	"fmt"
	"net/netip"
	"strings"
)

// validator checks the raw file and builds the Registry; it collects every
// error rather than stopping at the first. Each concern (nodes, services,
// Meshlets, workloads) has its own method; the maps carry what later
// entries are checked against.
type validator struct {
	errs []error

	nodes        map[string]bool
	cidrs        []cidrOwner
	services     map[string]bool       // "namespace/name"
	vipPorts     map[string]string     // "vip:port/proto" -> path
	endpointNode map[netip.Addr]string // endpoint IP -> node
}

type cidrOwner struct {
	p    netip.Prefix
	path string
}

func (v *validator) fail(line int, path, format string, args ...any) {
	v.errs = append(v.errs, &FieldError{Path: path, Line: line, Msg: fmt.Sprintf(format, args...)})
}

func (v *validator) file(raw *rawFile) *Registry {
	v.nodes = map[string]bool{}
	v.services = map[string]bool{}
	v.vipPorts = map[string]string{}
	v.endpointNode = map[netip.Addr]string{}
	r := &Registry{}
	for i := range raw.Nodes {
		r.Nodes = append(r.Nodes, v.node(i, &raw.Nodes[i]))
	}
	for i := range raw.Services {
		r.Services = append(r.Services, v.service(i, &raw.Services[i]))
	}
	r.Meshlets = v.meshlets(raw.Meshlets)
	r.Workloads = v.workloads(raw.Workloads)
	return r
}

func (v *validator) node(i int, rn *rawNode) Node {
	at := fmt.Sprintf("nodes[%d]", i)
	n := Node{Name: rn.Name}
	switch {
	case rn.Name == "":
		v.fail(rn.line, at+".name", "required")
	case v.nodes[rn.Name]:
		v.fail(rn.line, at+".name", "duplicate node %q", rn.Name)
	}
	v.nodes[rn.Name] = true
	if a, err := parseNodeAddress(rn.Address); err != nil {
		v.fail(rn.line, at+".address", "%s", err.Error())
	} else {
		n.Address = a
	}
	for j, s := range rn.PodCIDRs {
		pat := fmt.Sprintf("%s.podCIDRs[%d]", at, j)
		p, err := netip.ParsePrefix(strings.TrimSpace(s))
		if err != nil {
			v.fail(rn.line, pat, "invalid CIDR %q", s)
			continue
		}
		p = p.Masked()
		for _, o := range v.cidrs {
			if o.p.Overlaps(p) {
				v.fail(rn.line, pat, "%s overlaps %s (%s)", p, o.p, o.path)
			}
		}
		v.cidrs = append(v.cidrs, cidrOwner{p, pat})
		n.PodCIDRs = append(n.PodCIDRs, p)
	}
	return n
}

func (v *validator) service(i int, rs *rawService) Service {
	at := fmt.Sprintf("services[%d]", i)
	s := Service{Namespace: rs.Namespace, Name: rs.Name}
	if s.Namespace == "" {
		s.Namespace = "default"
	}
	if rs.Name == "" {
		v.fail(rs.line, at+".name", "required")
	} else if id := s.Namespace + "/" + s.Name; v.services[id] {
		v.fail(rs.line, at+".name", "duplicate service %s", id)
	} else {
		v.services[id] = true
	}
	for j, str := range rs.VIPs {
		a, err := netip.ParseAddr(strings.TrimSpace(str))
		if err != nil {
			v.fail(rs.line, fmt.Sprintf("%s.vips[%d]", at, j), "invalid IP %q", str)
			continue
		}
		s.VIPs = append(s.VIPs, a.Unmap())
	}
	names := map[string]bool{}
	for j := range rs.Ports {
		s.Ports = append(s.Ports, v.port(fmt.Sprintf("%s.ports[%d]", at, j), &rs.Ports[j], s.VIPs, names))
	}
	for j := range rs.Endpoints {
		s.Endpoints = append(s.Endpoints, v.endpoint(fmt.Sprintf("%s.endpoints[%d]", at, j), &rs.Endpoints[j]))
	}
	return s
}

// port checks one port of a service with vips; names are the port names
// the service used so far.
func (v *validator) port(at string, rp *rawPort, vips []netip.Addr, names map[string]bool) Port {
	p := Port{Name: rp.Name, Protocol: strings.ToUpper(rp.Protocol)}
	if p.Protocol == "" {
		p.Protocol = "TCP"
	}
	if p.Protocol != "TCP" && p.Protocol != "UDP" && p.Protocol != "SCTP" {
		v.fail(rp.line, at+".protocol", "must be TCP, UDP or SCTP, not %q", rp.Protocol)
	}
	if rp.Name != "" {
		if names[rp.Name] {
			v.fail(rp.line, at+".name", "duplicate port name %q", rp.Name)
		}
		names[rp.Name] = true
	}
	if rp.Port == nil {
		v.fail(rp.line, at+".port", "required")
	} else if *rp.Port < 1 || *rp.Port > 65535 {
		v.fail(rp.line, at+".port", "must be 1-65535")
	} else {
		p.Port = uint16(*rp.Port)
	}
	switch {
	case rp.TargetPort == nil:
		p.TargetPort = p.Port
	case *rp.TargetPort < 1 || *rp.TargetPort > 65535:
		v.fail(rp.line, at+".targetPort", "must be 1-65535")
	default:
		p.TargetPort = uint16(*rp.TargetPort)
	}
	if p.Port != 0 {
		for _, vip := range vips {
			key := netip.AddrPortFrom(vip, p.Port).String() + "/" + p.Protocol
			if prev, dup := v.vipPorts[key]; dup {
				v.fail(rp.line, at+".port", "%s is also %s", key, prev)
			} else {
				v.vipPorts[key] = at
			}
		}
	}
	return p
}

func (v *validator) endpoint(at string, re *rawEndpoint) Endpoint {
	e := Endpoint{Node: re.Node, Labels: re.Labels}
	a, err := netip.ParseAddr(strings.TrimSpace(re.IP))
	switch {
	case re.IP == "":
		v.fail(re.line, at+".ip", "required")
	case err != nil:
		v.fail(re.line, at+".ip", "invalid IP %q", re.IP)
	default:
		e.IP = a.Unmap()
	}
	switch {
	case re.Node == "":
		v.fail(re.line, at+".node", "required")
	case !v.nodes[re.Node]:
		v.fail(re.line, at+".node", "unknown node %q", re.Node)
	case e.IP.IsValid():
		if prev, ok := v.endpointNode[e.IP]; ok && prev != re.Node {
			v.fail(re.line, at+".node", "%s is already an endpoint on node %q", e.IP, prev)
		}
		v.endpointNode[e.IP] = re.Node
	}
	return e
}
