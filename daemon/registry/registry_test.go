package registry

import (
	"errors"
	"net/netip"
	"strings"
	"testing"

	"github.com/meshless/meshless/daemon/routes"
)

const good = `
nodes:
  - name: n1
    address: 198.18.0.1          # the node's tunnel address (port 15008)
    podCIDRs: [198.19.1.0/24]
  - name: n2
    address: 198.18.0.2:25008
    podCIDRs: [198.19.2.0/24, "fd00:2::/64"]
    futureField: ignored
services:
  - namespace: default
    name: web
    vips: [198.18.100.10]
    ports:
      - {name: http, port: 80, targetPort: 8080, protocol: TCP}
      - {name: metrics, port: 9100}
      - {name: dns, port: 53, protocol: udp}
    endpoints:
      - {ip: 198.19.2.2, node: n2, labels: {version: v1}}
      - {ip: 198.19.1.3, node: n1}
  - name: api
    vips: ["fd00:100::1"]
    ports:
      - {port: 443, targetPort: 8443}
`

func TestParseGood(t *testing.T) {
	r, err := Parse([]byte(good))
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Nodes) != 2 || len(r.Services) != 2 {
		t.Fatalf("got %d nodes %d services", len(r.Nodes), len(r.Services))
	}
	if got := r.Nodes[0].Address; got != netip.MustParseAddrPort("198.18.0.1:15008") {
		t.Errorf("default tunnel port: %v", got)
	}
	if got := r.Nodes[1].Address; got != netip.MustParseAddrPort("198.18.0.2:25008") {
		t.Errorf("explicit tunnel port: %v", got)
	}
	if got := r.Nodes[1].PodCIDRs[1]; got != netip.MustParsePrefix("fd00:2::/64") {
		t.Errorf("v6 cidr: %v", got)
	}
	web := r.Services[0]
	if web.Ports[1].TargetPort != 9100 || web.Ports[1].Protocol != "TCP" {
		t.Errorf("defaults: %+v", web.Ports[1])
	}
	if web.Ports[2].Protocol != "UDP" {
		t.Errorf("protocol not normalised: %+v", web.Ports[2])
	}
	if web.Endpoints[0].Labels["version"] != "v1" {
		t.Errorf("labels: %+v", web.Endpoints[0])
	}
	if r.Services[1].Namespace != "default" {
		t.Errorf("default namespace: %q", r.Services[1].Namespace)
	}

	// The model routes it: UDP ports are left out, TCP ones resolve.
	tb := routes.NewTable("n1")
	if err := tb.Update(r.ToModel()); err != nil {
		t.Fatal(err)
	}
	rt := tb.Lookup(netip.MustParseAddrPort("198.18.100.10:80"))
	if rt.Kind != routes.KindService || len(rt.Candidates) != 2 ||
		rt.Candidates[0].Addr != netip.MustParseAddrPort("198.19.2.2:8080") ||
		rt.Candidates[0].Tunnel != netip.MustParseAddrPort("198.18.0.2:25008") ||
		rt.Candidates[0].Local || !rt.Candidates[1].Local {
		t.Errorf("route: %+v", rt)
	}
	if rt := tb.Lookup(netip.MustParseAddrPort("198.18.100.10:53")); rt.Kind != routes.KindPassthrough {
		t.Errorf("udp port routed: %+v", rt)
	}
	if rt := tb.Lookup(netip.MustParseAddrPort("[fd00:100::1]:443")); rt.Kind != routes.KindService || len(rt.Candidates) != 0 {
		t.Errorf("v6 service: %+v", rt)
	}
}

func TestParseErrors(t *testing.T) {
	const nodes = "nodes:\n  - {name: n1, address: 198.18.0.1, podCIDRs: [198.19.1.0/24]}\n"
	tests := []struct {
		name string
		in   string
		want []string // each must appear in the error
	}{
		{"empty", "", []string{"empty file"}},
		{"comments only", "# nothing\n\n", []string{"empty file"}},
		{"syntax", "nodes: [", []string{"parse yaml"}},
		{"wrong type", "nodes: {a: b}", []string{"parse yaml", "line 1"}},
		{"port not a number", nodes + "services:\n  - name: s\n    ports: [{port: http}]\n", []string{"parse yaml", "line 5"}},
		{"two documents", "nodes: []\n---\nnodes: []\n", []string{"more than one YAML document"}},
		{"node name missing", "nodes:\n  - address: 1.2.3.4\n", []string{"nodes[0].name: required (line 2)"}},
		{"node address missing", "nodes:\n  - name: a\n", []string{"nodes[0].address: required"}},
		{"node address bad", "nodes:\n  - {name: a, address: 1.2.3}\n", []string{`nodes[0].address: invalid address "1.2.3"`}},
		{"node address port 0", "nodes:\n  - {name: a, address: '1.2.3.4:0'}\n", []string{"nodes[0].address: invalid address", "port must be 1-65535"}},
		{"duplicate node", nodes + "  - {name: n1, address: 198.18.0.2}\n", []string{`nodes[1].name: duplicate node "n1" (line 3)`}},
		{"bad cidr", "nodes:\n  - {name: a, address: 1.2.3.4, podCIDRs: [10.0.0.0/33]}\n", []string{`nodes[0].podCIDRs[0]: invalid CIDR "10.0.0.0/33"`}},
		{"overlapping cidr", nodes + "  - {name: n2, address: 198.18.0.2, podCIDRs: [198.19.0.0/16]}\n", []string{"nodes[1].podCIDRs[0]: 198.19.0.0/16 overlaps 198.19.1.0/24 (nodes[0].podCIDRs[0])"}},
		{"service name missing", nodes + "services:\n  - vips: [1.1.1.1]\n", []string{"services[0].name: required (line 4)"}},
		{"duplicate service", nodes + "services:\n  - {name: a}\n  - {name: a, namespace: default}\n", []string{"services[1].name: duplicate service default/a"}},
		{"bad vip", nodes + "services:\n  - {name: a, vips: [nope]}\n", []string{`services[0].vips[0]: invalid IP "nope"`}},
		{"port missing", nodes + "services:\n  - name: a\n    ports: [{name: x}]\n", []string{"services[0].ports[0].port: required (line 5)"}},
		{"port range", nodes + "services:\n  - name: a\n    ports: [{port: 70000}]\n", []string{"services[0].ports[0].port: must be 1-65535"}},
		{"target port range", nodes + "services:\n  - name: a\n  - name: b\n    ports:\n      - {port: 80}\n      - {port: 81, targetPort: 0}\n", []string{"services[1].ports[1].targetPort: must be 1-65535 (line 8)"}},
		{"negative target port", nodes + "services:\n  - name: a\n    ports: [{port: 80, targetPort: -1}]\n", []string{"services[0].ports[0].targetPort: must be 1-65535"}},
		{"protocol", nodes + "services:\n  - name: a\n    ports: [{port: 80, protocol: HTTP}]\n", []string{`services[0].ports[0].protocol: must be TCP, UDP or SCTP, not "HTTP"`}},
		{"duplicate port name", nodes + "services:\n  - name: a\n    ports: [{name: p, port: 80}, {name: p, port: 81}]\n", []string{`services[0].ports[1].name: duplicate port name "p"`}},
		{"vip port reused", nodes + "services:\n  - {name: a, vips: [1.1.1.1], ports: [{port: 80}]}\n  - {name: b, vips: [1.1.1.1], ports: [{port: 80}]}\n", []string{"services[1].ports[0].port: 1.1.1.1:80/TCP is also services[0].ports[0]"}},
		{"endpoint ip missing", nodes + "services:\n  - name: a\n    endpoints: [{node: n1}]\n", []string{"services[0].endpoints[0].ip: required"}},
		{"endpoint ip bad", nodes + "services:\n  - name: a\n    endpoints: [{ip: x, node: n1}]\n", []string{`services[0].endpoints[0].ip: invalid IP "x"`}},
		{"endpoint node missing", nodes + "services:\n  - name: a\n    endpoints: [{ip: 198.19.1.2}]\n", []string{"services[0].endpoints[0].node: required"}},
		{"endpoint node unknown", nodes + "services:\n  - name: a\n    endpoints: [{ip: 198.19.1.2, node: n9}]\n", []string{`services[0].endpoints[0].node: unknown node "n9"`}},
		{"endpoint on two nodes", nodes + "  - {name: n2, address: 198.18.0.2}\nservices:\n  - name: a\n    endpoints: [{ip: 198.19.1.2, node: n1}]\n  - name: b\n    endpoints: [{ip: 198.19.1.2, node: n2}]\n", []string{`services[1].endpoints[0].node: 198.19.1.2 is already an endpoint on node "n1"`}},
		{"all errors reported", "nodes:\n  - {name: a}\n  - {address: 1.1.1.1}\n", []string{"nodes[0].address: required", "nodes[1].name: required"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, err := Parse([]byte(tt.in))
			if err == nil {
				t.Fatalf("accepted: %+v", r)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
		})
	}
}

func TestFieldErrorAs(t *testing.T) {
	_, err := Parse([]byte("nodes:\n  - {name: a, address: 1.1.1.1}\nservices:\n  - name: s\n    ports: [{port: 0}]\n"))
	var fe *FieldError
	if !errors.As(err, &fe) {
		t.Fatalf("not a FieldError: %v", err)
	}
	if fe.Path != "services[0].ports[0].port" || fe.Line != 5 || fe.Msg != "must be 1-65535" {
		t.Errorf("got %+v", fe)
	}
}

func TestLoad(t *testing.T) {
	p := t.TempDir() + "/reg.yaml"
	if _, err := Load(p); err == nil || !strings.Contains(err.Error(), "read registry") {
		t.Errorf("missing file: %v", err)
	}
	writeFile(t, p, "nodes:\n  - {name: a}\n")
	if _, err := Load(p); err == nil || !strings.Contains(err.Error(), p) || !strings.Contains(err.Error(), "nodes[0].address: required") {
		t.Errorf("invalid file: %v", err)
	}
	writeFile(t, p, good)
	if r, err := Load(p); err != nil || len(r.Nodes) != 2 {
		t.Errorf("good file: %v %v", r, err)
	}
}
