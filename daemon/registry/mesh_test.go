package registry

import (
	"errors"
	"net/netip"
	"strings"
	"testing"

	"github.com/meshless/meshless/daemon/routes"
)

const meshGood = `
nodes:
  - {name: n1, address: 198.18.0.1, podCIDRs: [198.19.1.0/24]}
  - {name: n2, address: 198.18.0.2, podCIDRs: [198.19.2.0/24]}
services:
  - namespace: shop
    name: web
    vips: [198.18.100.10]
    ports: [{port: 80, targetPort: 8080}]
    endpoints:
      - {ip: 198.19.2.2, node: n2}
meshlets:
  - namespace: shop
    name: web
    spec:
      server:
        selector: {role: server}
        services:
          - {name: web, maxConn: 100, idleTimeout: 5m}
          - {name: admin}
        canary:
          - {version: v1, weight: 90}
          - {version: v2, weight: 10}
  - name: client
    spec:
      client:
        - {namespace: shop, meshlet: web, service: web}
  - namespace: shop
    name: quiet
    spec: {}
workloads:
  - namespace: shop
    name: web-1
    ip: 198.19.2.2
    node: n2
    serviceAccount: web
    labels: {meshless/meshlet: web, role: server, version: v1}
    futureField: ignored
  - {name: client-1, ip: 198.19.1.7, node: n1, labels: {meshless/meshlet: client}}
`

func TestParseMeshGood(t *testing.T) {
	r, err := Parse([]byte(meshGood))
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Meshlets) != 3 || len(r.Workloads) != 2 {
		t.Fatalf("got %d meshlets %d workloads", len(r.Meshlets), len(r.Workloads))
	}
	web := r.Meshlets[0]
	if s := web.Spec.Server.Services[0]; s.Name != "web" || s.MaxConn != 100 || s.IdleTimeout != "5m" {
		t.Errorf("service %+v", s)
	}
	if c := web.Spec.Server.Canary; len(c) != 2 || c[1].Version != "v2" || c[1].Weight != 10 {
		t.Errorf("canary %+v", c)
	}
	if r.Meshlets[1].Namespace != "default" {
		t.Errorf("default namespace: %q", r.Meshlets[1].Namespace)
	}
	w := r.Workloads[1]
	if w.Namespace != "default" || w.ServiceAccount != "default" || w.IPs[0] != netip.MustParseAddr("198.19.1.7") {
		t.Errorf("defaults: %+v", w)
	}

	// The model is sorted and the snapshot answers the checks' questions.
	m := r.ToModel()
	if m.Meshlets[0].Key() != "default/client" || m.Workloads[0].Key() != "default/client-1" {
		t.Errorf("model not sorted: %s %s", m.Meshlets[0].Key(), m.Workloads[0].Key())
	}
	s, err := routes.Build(m, "n1")
	if err != nil {
		t.Fatal(err)
	}
	src := s.Workload(netip.MustParseAddr("198.19.1.7"))
	from := s.MeshletOf(src)
	to, svc := s.MeshletService("shop", "web")
	if from == nil || to == nil || !from.Uses(to.Namespace, to.Name, svc.Name) {
		t.Errorf("client-1 -> shop/web: from %v to %v", from, to)
	}
	if servers := s.Mesh().Servers(to); len(servers) != 1 || servers[0].ServiceAccount != "web" {
		t.Errorf("servers %+v", servers)
	}
}

func TestParseMeshErrors(t *testing.T) {
	const nodes = "nodes:\n  - {name: n1, address: 198.18.0.1}\n"
	const ep = "services:\n  - {name: s, endpoints: [{ip: 198.19.1.2, node: n1}]}\n"
	meshlet := func(spec string) string { return nodes + "meshlets:\n  - name: m\n    spec:\n" + spec }
	tests := []struct {
		name string
		in   string
		want []string
	}{
		{"no spec", nodes + "meshlets:\n  - {name: m}\n", []string{"meshlets[0].spec: required (write spec: {}", "(line 4)"}},
		{"no name", nodes + "meshlets:\n  - {spec: {}}\n", []string{"meshlets[0].name: required (line 4)"}},
		{"bad namespace", nodes + "meshlets:\n  - {namespace: Shop, name: m, spec: {}}\n", []string{`meshlets[0].namespace: invalid name "Shop"`}},
		{"unknown field in a Meshlet", meshlet("      server:\n        services:\n          - name: web\n            maxconn: 10\n"),
			[]string{"meshlets[0].spec.server.services[0].maxconn: unknown field (known: name, maxConn, idleTimeout) (line 9)"}},
		{"unknown top-level field of a Meshlet", nodes + "meshlets:\n  - {name: m, spec: {}, labels: {a: b}}\n", []string{"meshlets[0].labels: unknown field"}},
		{"unknown field in the spec", meshlet("      clients: []\n"), []string{"meshlets[0].spec.clients: unknown field (known: client, server) (line 6)"}},
		{"bad duration", meshlet("      server:\n        services:\n          - {name: web, idleTimeout: 5 min}\n"),
			[]string{`meshlets[0].spec.server.services[0].idleTimeout: invalid duration "5 min": want a Go duration such as 30s, 5m or 1h30m (line 8)`}},
		{"duration as a number", meshlet("      server:\n        services:\n          - {name: web, idleTimeout: 30}\n"),
			[]string{`meshlets[0].spec.server.services[0].idleTimeout: invalid duration "30"`}},
		{"negative maxConn", meshlet("      server:\n        services:\n          - {name: web, maxConn: -1}\n"),
			[]string{"meshlets[0].spec.server.services[0].maxConn: must be 0 (no limit) to 2147483647, not -1 (line 8)"}},
		{"maxConn not a number", meshlet("      server:\n        services:\n          - {name: web, maxConn: lots}\n"), []string{"parse yaml", "line 8"}},
		{"duplicate service names", meshlet("      server:\n        services:\n          - {name: web}\n          - {name: web}\n"),
			[]string{`meshlets[0].spec.server.services[1].name: duplicate service "web" (also spec.server.services[0]) (line 9)`}},
		{"weight missing", meshlet("      server:\n        canary:\n          - {version: v1}\n"),
			[]string{"meshlets[0].spec.server.canary[0].weight: required (line 8)", "meshlets[0].spec.server.canary: weights add up to 0, want 100 (line 7)"}},
		{"duplicate versions", meshlet("      server:\n        canary:\n          - {version: v1, weight: 50}\n          - {version: v1, weight: 50}\n"),
			[]string{`meshlets[0].spec.server.canary[1].version: duplicate version "v1" (also spec.server.canary[0]) (line 9)`}},
		{"negative weight", meshlet("      server:\n        canary:\n          - {version: v1, weight: 101}\n          - {version: v2, weight: -1}\n"),
			[]string{"meshlets[0].spec.server.canary[1].weight: must be 0 to 100, not -1 (line 9)"}},
		{"bad client", meshlet("      client:\n        - {meshlet: db}\n"), []string{"meshlets[0].spec.client[0].service: required (line 7)"}},
		{"bad selector", meshlet("      server:\n        selector: {app: a b}\n"), []string{`meshlets[0].spec.server.selector[app]: invalid label value "a b"`, "(line 7)"}},
		{"duplicate Meshlet", nodes + "meshlets:\n  - {name: m, spec: {}}\n  - {name: m, namespace: default, spec: {}}\n", []string{"meshlets[1].name: duplicate Meshlet default/m (line 5)"}},
		{"service served by two Meshlets", nodes + "meshlets:\n  - {name: a, spec: {server: {services: [{name: web}]}}}\n  - {name: b, spec: {server: {services: [{name: web}]}}}\n",
			[]string{`meshlets[1].spec.server.services[0].name: service "web" is already served by Meshlet default/a`}},
		{"workload name missing", nodes + "workloads:\n  - {ip: 198.19.1.2, node: n1}\n", []string{"workloads[0].name: required (line 4)"}},
		{"workload ip missing", nodes + "workloads:\n  - {name: p, node: n1}\n", []string{"workloads[0].ip: required"}},
		{"workload ip bad", nodes + "workloads:\n  - {name: p, ip: 1.2.3, node: n1}\n", []string{`workloads[0].ip: invalid IP "1.2.3"`}},
		{"workload node unknown", nodes + "workloads:\n  - {name: p, ip: 198.19.1.2, node: n9}\n", []string{`workloads[0].node: unknown node "n9"`}},
		{"workload node missing", nodes + "workloads:\n  - {name: p, ip: 198.19.1.2}\n", []string{"workloads[0].node: required"}},
		{"duplicate workload", nodes + "workloads:\n  - {name: p, ip: 198.19.1.2, node: n1}\n  - {name: p, ip: 198.19.1.3, node: n1, namespace: default}\n",
			[]string{"workloads[1].name: duplicate workload default/p (also workloads[0]) (line 5)"}},
		{"workload address reused", nodes + "workloads:\n  - {name: p, ip: 198.19.1.2, node: n1}\n  - {name: q, ip: '::ffff:198.19.1.2', node: n1}\n",
			[]string{"workloads[1].ip: 198.19.1.2 is also workloads[0] (line 5)"}},
		{"workload on another node than its endpoint", nodes + "  - {name: n2, address: 198.18.0.2}\n" + ep + "workloads:\n  - {name: p, ip: 198.19.1.2, node: n2}\n",
			[]string{`workloads[0].node: 198.19.1.2 is an endpoint on node "n1"`}},
		{"one bad Meshlet refuses the whole file", strings.Replace(meshGood, "maxConn: 100", "maxConn: -100", 1),
			[]string{"meshlets[0].spec.server.services[0].maxConn: must be 0 (no limit) to 2147483647, not -100 (line 19)"}},
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

func TestMeshFieldErrorAs(t *testing.T) {
	_, err := Parse([]byte("meshlets:\n  - name: m\n    spec:\n      server:\n        services:\n          - {name: web, maxConn: -5}\n"))
	var fe *FieldError
	if !errors.As(err, &fe) {
		t.Fatalf("not a FieldError: %v", err)
	}
	if fe.Path != "meshlets[0].spec.server.services[0].maxConn" || fe.Line != 6 {
		t.Errorf("got %+v", fe)
	}
}
