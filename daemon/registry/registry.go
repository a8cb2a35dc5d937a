// Package registry reads the YAML registry file (meshlessd --registry): the
// mesh's nodes and services when there is no Kubernetes API, as in the local
// lab and tests.
//
//	nodes:
//	  - name: n1
//	    address: 198.18.0.1          # tunnel address; port 15008 unless given
//	    podCIDRs: [198.19.1.0/24]
//	services:
//	  - namespace: default
//	    name: web
//	    vips: [198.18.100.10]
//	    ports:
//	      - {name: http, port: 80, targetPort: 8080, protocol: TCP}
//	    endpoints:
//	      - {ip: 198.19.2.2, node: n2, labels: {version: v1}}
//
// Parse and Load validate everything and name the offending field and its
// position, e.g. "services[1].ports[0].targetPort: must be 1-65535 (line 14)".
// Unknown fields are ignored, so newer files still load. Watch reloads the
// file when it changes and keeps the last good registry while the file is
// invalid. ToModel converts a registry into the routing table's model.
package registry

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"strings"

	"gopkg.in/yaml.v3"

	"github.com/meshless/meshless/daemon/routes"
	"github.com/meshless/meshless/internal/wellknown"
)

// Registry is a validated registry file.
type Registry struct {
	// Nodes are the mesh's nodes.
	Nodes []Node
	// Services are the mesh's services.
	Services []Service
}

// Node is one node of the mesh.
type Node struct {
	// Name identifies the node; endpoints refer to it.
	Name string
	// Address is the node daemon's tunnel address; the port is 15008
	// unless the file gives one ("198.18.0.1:25008", "[fd00::1]:25008").
	Address netip.AddrPort
	// PodCIDRs are the pod subnets of the node, masked.
	PodCIDRs []netip.Prefix
}

// Service is one service.
type Service struct {
	// Namespace is the service's namespace, "default" when omitted.
	Namespace string
	// Name is the service's name.
	Name string
	// VIPs are the service's virtual IPs.
	VIPs []netip.Addr
	// Ports are the service's ports.
	Ports []Port
	// Endpoints are the pods serving the service.
	Endpoints []Endpoint
}

// Port is one service port.
type Port struct {
	// Name is the port's name, possibly empty.
	Name string
	// Port is the port on the VIPs.
	Port uint16
	// TargetPort is the port on the endpoints; Port when omitted.
	TargetPort uint16
	// Protocol is TCP, UDP or SCTP; TCP when omitted. Only TCP ports are
	// routed by the mesh.
	Protocol string
}

// Endpoint is one pod serving a service.
type Endpoint struct {
	// IP is the pod's address.
	IP netip.Addr
	// Node is the name of the pod's node; it must be in Registry.Nodes.
	Node string
	// Labels are the pod's labels.
	Labels map[string]string
}

// FieldError is one validation error: the field's path, the line in the
// file (0 if unknown) and what is wrong.
type FieldError struct {
	// Path names the field, e.g. "services[1].ports[0].targetPort".
	Path string
	// Line is the 1-based line of the enclosing entry in the file, or 0.
	Line int
	// Msg says what is wrong.
	Msg string
}

// Error returns "path: msg (line N)".
func (e *FieldError) Error() string {
	if e.Line > 0 {
		return fmt.Sprintf("%s: %s (line %d)", e.Path, e.Msg, e.Line)
	}
	return fmt.Sprintf("%s: %s", e.Path, e.Msg)
}

// The raw file, as YAML gives it. Numbers are ints so that out-of-range
// values are reported as such rather than as YAML type errors.
type rawFile struct {
	Nodes    []rawNode    `yaml:"nodes"`
	Services []rawService `yaml:"services"`
}

type rawNode struct {
	line     int
	Name     string   `yaml:"name"`
	Address  string   `yaml:"address"`
	PodCIDRs []string `yaml:"podCIDRs"`
}

type rawService struct {
	line      int
	Namespace string        `yaml:"namespace"`
	Name      string        `yaml:"name"`
	VIPs      []string      `yaml:"vips"`
	Ports     []rawPort     `yaml:"ports"`
	Endpoints []rawEndpoint `yaml:"endpoints"`
}

type rawPort struct {
	line       int
	Name       string `yaml:"name"`
	Port       *int   `yaml:"port"`
	TargetPort *int   `yaml:"targetPort"`
	Protocol   string `yaml:"protocol"`
}

type rawEndpoint struct {
	line   int
	IP     string            `yaml:"ip"`
	Node   string            `yaml:"node"`
	Labels map[string]string `yaml:"labels"`
}

// The UnmarshalYAML methods record where each entry starts in the file.

func (r *rawNode) UnmarshalYAML(n *yaml.Node) error {
	type plain rawNode
	r.line = n.Line
	return n.Decode((*plain)(r))
}

func (r *rawService) UnmarshalYAML(n *yaml.Node) error {
	type plain rawService
	r.line = n.Line
	return n.Decode((*plain)(r))
}

func (r *rawPort) UnmarshalYAML(n *yaml.Node) error {
	type plain rawPort
	r.line = n.Line
	return n.Decode((*plain)(r))
}

func (r *rawEndpoint) UnmarshalYAML(n *yaml.Node) error {
	type plain rawEndpoint
	r.line = n.Line
	return n.Decode((*plain)(r))
}

// Load reads and validates the registry file at path.
func Load(path string) (*Registry, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read registry: %w", err)
	}
	r, err := Parse(b)
	if err != nil {
		return nil, fmt.Errorf("registry %s: %w", path, err)
	}
	return r, nil
}

// Parse validates the registry in b. A file that is empty or only
// whitespace and comments is an error (it is more likely a file caught
// half-written than a wish to remove everything); write "{}" for an empty
// registry. Every validation error is reported, joined; each is a
// *FieldError.
func Parse(b []byte) (*Registry, error) {
	if len(bytes.TrimSpace(b)) == 0 {
		return nil, errors.New("empty file")
	}
	var raw rawFile
	dec := yaml.NewDecoder(bytes.NewReader(b))
	if err := dec.Decode(&raw); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, errors.New("empty file")
		}
		return nil, fmt.Errorf("parse yaml: %w", err)
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); err == nil {
		return nil, fmt.Errorf("line %d: more than one YAML document", extra.Line)
	}
	v := &validator{}
	r := v.file(&raw)
	if len(v.errs) > 0 {
		return nil, errors.Join(v.errs...)
	}
	return r, nil
}

type validator struct{ errs []error }

func (v *validator) fail(line int, path, format string, args ...any) {
	v.errs = append(v.errs, &FieldError{Path: path, Line: line, Msg: fmt.Sprintf(format, args...)})
}

func (v *validator) file(raw *rawFile) *Registry {
	r := &Registry{}
	nodes := map[string]bool{}
	type cidrOwner struct {
		p    netip.Prefix
		path string
	}
	var cidrs []cidrOwner
	for i, rn := range raw.Nodes {
		at := fmt.Sprintf("nodes[%d]", i)
		n := Node{Name: rn.Name}
		switch {
		case rn.Name == "":
			v.fail(rn.line, at+".name", "required")
		case nodes[rn.Name]:
			v.fail(rn.line, at+".name", "duplicate node %q", rn.Name)
		}
		nodes[rn.Name] = true
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
			for _, o := range cidrs {
				if o.p.Overlaps(p) {
					v.fail(rn.line, pat, "%s overlaps %s (%s)", p, o.p, o.path)
				}
			}
			cidrs = append(cidrs, cidrOwner{p, pat})
			n.PodCIDRs = append(n.PodCIDRs, p)
		}
		r.Nodes = append(r.Nodes, n)
	}

	services := map[string]bool{}
	vipPorts := map[string]string{} // "vip/proto/port" -> path
	endpointNode := map[netip.Addr]string{}
	for i, rs := range raw.Services {
		at := fmt.Sprintf("services[%d]", i)
		s := Service{Namespace: rs.Namespace, Name: rs.Name}
		if s.Namespace == "" {
			s.Namespace = "default"
		}
		if rs.Name == "" {
			v.fail(rs.line, at+".name", "required")
		} else if id := s.Namespace + "/" + s.Name; services[id] {
			v.fail(rs.line, at+".name", "duplicate service %s", id)
		} else {
			services[id] = true
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
		for j, rp := range rs.Ports {
			pat := fmt.Sprintf("%s.ports[%d]", at, j)
			p := Port{Name: rp.Name, Protocol: strings.ToUpper(rp.Protocol)}
			if p.Protocol == "" {
				p.Protocol = "TCP"
			}
			if p.Protocol != "TCP" && p.Protocol != "UDP" && p.Protocol != "SCTP" {
				v.fail(rp.line, pat+".protocol", "must be TCP, UDP or SCTP, not %q", rp.Protocol)
			}
			if rp.Name != "" {
				if names[rp.Name] {
					v.fail(rp.line, pat+".name", "duplicate port name %q", rp.Name)
				}
				names[rp.Name] = true
			}
			if rp.Port == nil {
				v.fail(rp.line, pat+".port", "required")
			} else if *rp.Port < 1 || *rp.Port > 65535 {
				v.fail(rp.line, pat+".port", "must be 1-65535")
			} else {
				p.Port = uint16(*rp.Port)
			}
			switch {
			case rp.TargetPort == nil:
				p.TargetPort = p.Port
			case *rp.TargetPort < 1 || *rp.TargetPort > 65535:
				v.fail(rp.line, pat+".targetPort", "must be 1-65535")
			default:
				p.TargetPort = uint16(*rp.TargetPort)
			}
			if p.Port != 0 {
				for _, vip := range s.VIPs {
					key := netip.AddrPortFrom(vip, p.Port).String() + "/" + p.Protocol
					if prev, dup := vipPorts[key]; dup {
						v.fail(rp.line, pat+".port", "%s is also %s", key, prev)
					} else {
						vipPorts[key] = pat
					}
				}
			}
			s.Ports = append(s.Ports, p)
		}
		for j, re := range rs.Endpoints {
			pat := fmt.Sprintf("%s.endpoints[%d]", at, j)
			e := Endpoint{Node: re.Node, Labels: re.Labels}
			a, err := netip.ParseAddr(strings.TrimSpace(re.IP))
			switch {
			case re.IP == "":
				v.fail(re.line, pat+".ip", "required")
			case err != nil:
				v.fail(re.line, pat+".ip", "invalid IP %q", re.IP)
			default:
				e.IP = a.Unmap()
			}
			switch {
			case re.Node == "":
				v.fail(re.line, pat+".node", "required")
			case !nodes[re.Node]:
				v.fail(re.line, pat+".node", "unknown node %q", re.Node)
			case e.IP.IsValid():
				if prev, ok := endpointNode[e.IP]; ok && prev != re.Node {
					v.fail(re.line, pat+".node", "%s is already an endpoint on node %q", e.IP, prev)
				}
				endpointNode[e.IP] = re.Node
			}
			s.Endpoints = append(s.Endpoints, e)
		}
		r.Services = append(r.Services, s)
	}
	return r
}

func parseNodeAddress(s string) (netip.AddrPort, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return netip.AddrPort{}, errors.New("required")
	}
	if a, err := netip.ParseAddr(s); err == nil {
		return netip.AddrPortFrom(a.Unmap(), wellknown.TunnelPort), nil
	}
	ap, err := netip.ParseAddrPort(s)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("invalid address %q: want IP or IP:port", s)
	}
	if ap.Port() == 0 {
		return netip.AddrPort{}, fmt.Errorf("invalid address %q: port must be 1-65535", s)
	}
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()), nil
}

// ToModel converts the registry into the routing table's model. Ports other
// than TCP are left out.
func (r *Registry) ToModel() routes.Model {
	var m routes.Model
	for _, n := range r.Nodes {
		m.Nodes = append(m.Nodes, routes.Node{Name: n.Name, Tunnel: n.Address, PodCIDRs: n.PodCIDRs})
	}
	for _, s := range r.Services {
		rs := routes.Service{Namespace: s.Namespace, Name: s.Name, VIPs: s.VIPs}
		for _, p := range s.Ports {
			if p.Protocol == "TCP" {
				rs.Ports = append(rs.Ports, routes.ServicePort{Name: p.Name, Port: p.Port, TargetPort: p.TargetPort})
			}
		}
		for _, e := range s.Endpoints {
			rs.Endpoints = append(rs.Endpoints, routes.Endpoint{IP: e.IP, Node: e.Node, Labels: e.Labels})
		}
		m.Services = append(m.Services, rs)
	}
	return m
}
