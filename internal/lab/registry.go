package lab

import (
	"bytes"
	"fmt"
	"net/netip"
	"os"

	"gopkg.in/yaml.v3"

	"github.com/meshless/meshless/daemon/meshlet"
)

// The sample service every lab registers: default/web on VIP
// 198.18.100.10:80, served on port 8080 by pod p1 of every node.
const (
	ServiceNamespace  = "default"
	ServiceName       = "web"
	ServiceVIP        = "198.18.100.10"
	ServicePort       = 80
	ServiceTargetPort = 8080
)

// The registry file's shape (see DESIGN.md), for encoding only.
type regFile struct {
	Nodes     []regNode         `yaml:"nodes"`
	Services  []regService      `yaml:"services"`
	Workloads []regWorkload     `yaml:"workloads,omitempty"`
	Meshlets  []meshlet.Meshlet `yaml:"meshlets,omitempty"`
}

type regWorkload struct {
	Namespace      string            `yaml:"namespace"`
	Name           string            `yaml:"name"`
	IP             string            `yaml:"ip"`
	Node           string            `yaml:"node"`
	ServiceAccount string            `yaml:"serviceAccount"`
	Labels         map[string]string `yaml:"labels,omitempty"`
}

type regNode struct {
	Name     string   `yaml:"name"`
	Address  string   `yaml:"address"`
	PodCIDRs []string `yaml:"podCIDRs,flow"`
}

type regService struct {
	Namespace string        `yaml:"namespace"`
	Name      string        `yaml:"name"`
	VIPs      []string      `yaml:"vips,flow"`
	Ports     []regPort     `yaml:"ports"`
	Endpoints []regEndpoint `yaml:"endpoints"`
}

type regPort struct {
	Name       string `yaml:"name"`
	Port       int    `yaml:"port"`
	TargetPort int    `yaml:"targetPort"`
	Protocol   string `yaml:"protocol"`
}

type regEndpoint struct {
	IP     string            `yaml:"ip"`
	Node   string            `yaml:"node"`
	Labels map[string]string `yaml:"labels,omitempty"`
}

// predictedIP is the address host-local gives the k-th pod (1-based) ADDed
// on a fresh node: the range starts after the gateway (.1).
func predictedIP(n *NodeState, k int) string {
	p := netip.MustParsePrefix(n.PodCIDR).Addr()
	for range k + 1 {
		p = p.Next()
	}
	return p.String()
}

// registryYAML renders the registry: every node and the sample service.
// Endpoints whose pod has no IP yet use the IP host-local will give it, so
// the daemons start with the final routing table.
func (s *State) registryYAML() ([]byte, error) {
	f := regFile{Nodes: []regNode{}, Services: []regService{}}
	for _, n := range s.Nodes {
		f.Nodes = append(f.Nodes, regNode{Name: n.Name, Address: n.Address, PodCIDRs: []string{n.PodCIDR}})
	}
	services := s.Extra
	if s.Service != nil {
		services = append([]ServiceState{*s.Service}, s.Extra...)
	}
	for _, svc := range services {
		rs, err := s.regService(svc)
		if err != nil {
			return nil, err
		}
		f.Services = append(f.Services, rs)
	}
	// Every pod with an address is a workload: its identity, its node and
	// its labels (Meshlet membership) for the daemons' checks.
	for _, n := range s.Nodes {
		for _, p := range n.Pods {
			if p.IP == "" {
				continue
			}
			f.Workloads = append(f.Workloads, regWorkload{Namespace: PodNamespace, Name: p.k8sName(), IP: p.IP,
				Node: n.Name, ServiceAccount: PodServiceAccount, Labels: p.Labels})
		}
	}
	f.Meshlets = s.Meshlets
	var buf bytes.Buffer
	buf.WriteString("# Written by meshlessctl lab for lab " + s.Name + "; rewritten by lab up.\n")
	enc := yaml.NewEncoder(&buf)
	enc.SetIndent(2)
	if err := enc.Encode(f); err != nil {
		return nil, fmt.Errorf("encode registry: %w", err)
	}
	if err := enc.Close(); err != nil {
		return nil, fmt.Errorf("encode registry: %w", err)
	}
	return buf.Bytes(), nil
}

// regService renders one service; endpoints whose pod has no IP yet use
// the IP host-local will give it.
func (s *State) regService(svc ServiceState) (regService, error) {
	rs := regService{
		Namespace: svc.Namespace, Name: svc.Name, VIPs: []string{svc.VIP},
		Ports:     []regPort{{Name: "http", Port: svc.Port, TargetPort: svc.TargetPort, Protocol: "TCP"}},
		Endpoints: []regEndpoint{},
	}
	for _, ref := range svc.Endpoints {
		var ni, pj int
		if _, err := fmt.Sscanf(ref, "n%d/p%d", &ni, &pj); err != nil {
			return rs, fmt.Errorf("service endpoint %q: %w", ref, err)
		}
		n := s.node(fmt.Sprintf("n%d", ni))
		if n == nil {
			continue
		}
		ip := predictedIP(n, pj)
		labels := map[string]string{"app": svc.Name, "version": "v1"}
		if p := s.pod(ref); p != nil {
			if p.IP != "" {
				ip = p.IP
			}
			if v := p.Labels["version"]; v != "" {
				labels["version"] = v
			}
		}
		rs.Endpoints = append(rs.Endpoints, regEndpoint{IP: ip, Node: n.Name, Labels: labels})
	}
	return rs, nil
}

// writeRegistry (re)writes the registry file when its content changed;
// the daemons watch it and pick up the change.
func (s *State) writeRegistry() error {
	b, err := s.registryYAML()
	if err != nil {
		return err
	}
	if old, err := os.ReadFile(s.Registry); err == nil && bytes.Equal(old, b) {
		return nil
	}
	return writeFileAtomic(s.Registry, b)
}
