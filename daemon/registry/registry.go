// Package registry reads the YAML registry file (meshlessd --registry): the
// mesh's nodes, services, Meshlets and pods when there is no Kubernetes
// API, as in the local lab and tests.
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
//	meshlets:                        # the Meshlet resource's specs
//	  - namespace: default
//	    name: web
//	    spec:
//	      client: [{meshlet: db, service: pg}]
//	      server:
//	        services: [{name: web, maxConn: 100, idleTimeout: 5m}]
//	        canary: [{version: v1, weight: 90}, {version: v2, weight: 10}]
//	workloads:                       # the pods: identity and labels
//	  - {namespace: default, name: web-1, ip: 198.19.2.2, node: n2,
//	     serviceAccount: web, labels: {meshless/meshlet: web, version: v1}}
//
// Parse and Load validate everything and name the offending field and its
// position, e.g. "services[1].ports[0].targetPort: must be 1-65535 (line 14)".
// Unknown fields are ignored, so newer files still load, except inside a
// Meshlet: a policy with a misspelt field would not say what its author
// meant, so there an unknown field is an error. Meshlets follow the rules
// of package meshlet (those of the apiserver's schema), and spec and every
// canary weight must be given.
//
// A file with any error is refused whole, a malformed Meshlet included:
// Watch reports it and the caller keeps the last good registry, so a typo
// in one Meshlet never drops the policy or the routes the file had. (The
// Kubernetes source, where each Meshlet is its own object, leaves out only
// the bad Meshlet.) ToModel converts a registry into the routing table's
// model.
package registry

import (
	"bytes"
	"cmp"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"slices"
	"strings"

	"gopkg.in/yaml.v3"

	"github.com/meshless/meshless/daemon/meshlet"
	"github.com/meshless/meshless/daemon/routes"
	"github.com/meshless/meshless/internal/wellknown"
)

// Registry is a validated registry file.
type Registry struct {
	// Nodes are the mesh's nodes.
	Nodes []Node
	// Services are the mesh's services.
	Services []Service
	// Meshlets are the mesh's Meshlets, valid, in the file's order;
	// namespace "default" when omitted.
	Meshlets []meshlet.Meshlet
	// Workloads are the mesh's pods, in the file's order; namespace and
	// service account "default" when omitted.
	Workloads []meshlet.Workload
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
// than TCP are left out; workloads and Meshlets are sorted by namespace
// and name, as the model wants them.
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
	m.Workloads = slices.SortedFunc(slices.Values(r.Workloads), func(a, b meshlet.Workload) int {
		return cmp.Or(cmp.Compare(a.Namespace, b.Namespace), cmp.Compare(a.Name, b.Name))
	})
	m.Meshlets = slices.SortedFunc(slices.Values(r.Meshlets), func(a, b meshlet.Meshlet) int {
		return cmp.Or(cmp.Compare(a.Namespace, b.Namespace), cmp.Compare(a.Name, b.Name))
	})
	return m
}
