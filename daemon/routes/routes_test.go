package routes

import (
	"fmt"
	"net/netip"
	"strings"
	"sync"
	"testing"

	"github.com/meshless/meshless/daemon/meshlet"
)

func ap(s string) netip.AddrPort { return netip.MustParseAddrPort(s) }
func ip(s string) netip.Addr     { return netip.MustParseAddr(s) }
func pfx(s string) netip.Prefix  { return netip.MustParsePrefix(s) }

func testModel() Model {
	return Model{
		Nodes: []Node{
			{Name: "n1", Tunnel: ap("198.18.0.1:15008"), PodCIDRs: []netip.Prefix{pfx("198.19.1.0/24")}},
			{Name: "n2", Tunnel: ap("198.18.0.2:15008"), PodCIDRs: []netip.Prefix{pfx("198.19.2.0/24"), pfx("fd00:2::/64")}},
			{Name: "n3", Tunnel: ap("198.18.0.3:15008"), PodCIDRs: []netip.Prefix{pfx("198.19.0.0/28")}},
		},
		Services: []Service{{
			Namespace: "default", Name: "web",
			VIPs:  []netip.Addr{ip("198.18.100.10"), ip("fd00:100::10")},
			Ports: []ServicePort{{Name: "http", Port: 80, TargetPort: 8080}, {Name: "admin", Port: 81, TargetPort: 9090}},
			Endpoints: []Endpoint{
				{IP: ip("198.19.1.5"), Node: "n1", Labels: map[string]string{"version": "v1"}},
				{IP: ip("198.19.2.2"), Node: "n2"},
			},
		}, {
			Namespace: "default", Name: "empty",
			VIPs:  []netip.Addr{ip("198.18.100.11")},
			Ports: []ServicePort{{Port: 443, TargetPort: 8443}},
		}, {
			// An endpoint outside every pod CIDR (host network).
			Namespace: "kube-system", Name: "dns",
			VIPs:      []netip.Addr{ip("198.18.100.53")},
			Ports:     []ServicePort{{Name: "dns", Port: 53, TargetPort: 53}},
			Endpoints: []Endpoint{{IP: ip("10.0.0.7"), Node: "n3"}},
		}},
		Workloads: []meshlet.Workload{
			{Namespace: "default", Name: "web-1", IPs: []netip.Addr{ip("198.19.1.5")}, Node: "n1", ServiceAccount: "web",
				Labels: map[string]string{meshlet.LabelMeshlet: "web", "version": "v1"}},
			{Namespace: "default", Name: "client-1", IPs: []netip.Addr{ip("198.19.2.9"), ip("fd00:2::9")}, Node: "n2",
				Labels: map[string]string{meshlet.LabelMeshlet: "client"}},
		},
		Meshlets: []meshlet.Meshlet{
			{Namespace: "default", Name: "client", Spec: meshlet.Spec{Client: []meshlet.ClientRef{{Meshlet: "web", Service: "web"}}}},
			{Namespace: "default", Name: "web", Spec: meshlet.Spec{Server: meshlet.Server{Services: []meshlet.Service{{Name: "web", MaxConn: 10}}}}},
		},
	}
}

func TestLookup(t *testing.T) {
	s, err := Build(testModel(), "n1")
	if err != nil {
		t.Fatal(err)
	}
	n1 := ap("198.18.0.1:15008")
	n2 := ap("198.18.0.2:15008")
	n3 := ap("198.18.0.3:15008")
	webHTTP := []Candidate{
		{Addr: ap("198.19.1.5:8080"), Node: "n1", Tunnel: n1, Local: true},
		{Addr: ap("198.19.2.2:8080"), Node: "n2", Tunnel: n2},
	}
	tests := []struct {
		name       string
		dst        string
		kind       Kind
		service    string
		portName   string
		candidates []Candidate
		pod        Candidate
	}{
		{name: "vip http", dst: "198.18.100.10:80", kind: KindService, service: "default/web", portName: "http", candidates: webHTTP},
		{name: "vip admin resolves its own target port", dst: "198.18.100.10:81", kind: KindService, service: "default/web", portName: "admin", candidates: []Candidate{
			{Addr: ap("198.19.1.5:9090"), Node: "n1", Tunnel: n1, Local: true},
			{Addr: ap("198.19.2.2:9090"), Node: "n2", Tunnel: n2},
		}},
		{name: "v6 vip", dst: "[fd00:100::10]:80", kind: KindService, service: "default/web", portName: "http", candidates: webHTTP},
		{name: "v4-mapped vip", dst: "[::ffff:198.18.100.10]:80", kind: KindService, service: "default/web", portName: "http", candidates: webHTTP},
		{name: "vip unknown port", dst: "198.18.100.10:8080", kind: KindPassthrough},
		{name: "service without endpoints", dst: "198.18.100.11:443", kind: KindService, service: "default/empty"},
		{name: "local endpoint ip", dst: "198.19.1.5:8080", kind: KindPod, pod: Candidate{Addr: ap("198.19.1.5:8080"), Node: "n1", Tunnel: n1, Local: true}},
		{name: "remote endpoint ip any port", dst: "198.19.2.2:22", kind: KindPod, pod: Candidate{Addr: ap("198.19.2.2:22"), Node: "n2", Tunnel: n2}},
		{name: "pod in local cidr", dst: "198.19.1.77:5000", kind: KindPod, pod: Candidate{Addr: ap("198.19.1.77:5000"), Node: "n1", Tunnel: n1, Local: true}},
		{name: "pod in remote cidr", dst: "198.19.2.200:5000", kind: KindPod, pod: Candidate{Addr: ap("198.19.2.200:5000"), Node: "n2", Tunnel: n2}},
		{name: "pod in /28 cidr", dst: "198.19.0.15:1", kind: KindPod, pod: Candidate{Addr: ap("198.19.0.15:1"), Node: "n3", Tunnel: n3}},
		{name: "just outside /28 cidr", dst: "198.19.0.16:1", kind: KindPassthrough},
		{name: "v6 pod", dst: "[fd00:2::9]:80", kind: KindPod, pod: Candidate{Addr: ap("[fd00:2::9]:80"), Node: "n2", Tunnel: n2}},
		{name: "host network endpoint", dst: "10.0.0.7:53", kind: KindPod, pod: Candidate{Addr: ap("10.0.0.7:53"), Node: "n3", Tunnel: n3}},
		{name: "v4-mapped pod", dst: "[::ffff:198.19.2.3]:80", kind: KindPod, pod: Candidate{Addr: ap("198.19.2.3:80"), Node: "n2", Tunnel: n2}},
		{name: "internet", dst: "1.1.1.1:443", kind: KindPassthrough},
		{name: "node address", dst: "198.18.0.2:15008", kind: KindPassthrough},
		{name: "v6 internet", dst: "[2001:db8::1]:443", kind: KindPassthrough},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := s.Lookup(ap(tt.dst))
			if r.Kind != tt.kind {
				t.Fatalf("kind = %v, want %v (route %+v)", r.Kind, tt.kind, r)
			}
			if r.Service != tt.service || r.PortName != tt.portName {
				t.Errorf("service = %q port %q, want %q port %q", r.Service, r.PortName, tt.service, tt.portName)
			}
			if got, want := candStrings(r.Candidates), candStrings(tt.candidates); got != want {
				t.Errorf("candidates =\n%s\nwant\n%s", got, want)
			}
			if got, want := candStrings([]Candidate{r.Pod}), candStrings([]Candidate{tt.pod}); got != want {
				t.Errorf("pod = %s, want %s", got, want)
			}
		})
	}
	if r := s.Lookup(ap("198.18.100.10:80")); r.Candidates[0].Labels["version"] != "v1" {
		t.Errorf("labels not carried: %+v", r.Candidates[0])
	}
	if !s.IsVIP(ip("198.18.100.10")) || s.IsVIP(ip("198.19.1.5")) {
		t.Error("IsVIP wrong")
	}
	if a, ok := s.Node("n2"); !ok || a != n2 {
		t.Errorf("Node(n2) = %v %v", a, ok)
	}
}

func candStrings(cs []Candidate) string {
	var b strings.Builder
	for _, c := range cs {
		fmt.Fprintf(&b, "%s node=%s tunnel=%s local=%v\n", c.Addr, c.Node, c.Tunnel, c.Local)
	}
	return b.String()
}

func TestBuildErrors(t *testing.T) {
	tests := []struct {
		name   string
		mutate func(*Model)
		want   string
	}{
		{"overlapping cidrs", func(m *Model) { m.Nodes[2].PodCIDRs = []netip.Prefix{pfx("198.19.1.128/25")} }, "nodes[2].podCIDRs[0]: 198.19.1.128/25 overlaps 198.19.1.0/24"},
		{"duplicate node", func(m *Model) { m.Nodes[1].Name = "n1" }, `nodes[1]: duplicate node "n1"`},
		{"duplicate vip port", func(m *Model) {
			m.Services[1].VIPs = []netip.Addr{ip("198.18.100.10")}
			m.Services[1].Ports[0].Port = 80
		}, "services[1]: 198.18.100.10:80 is also service default/web"},
		{"endpoint on two nodes", func(m *Model) { m.Services[2].Endpoints[0] = Endpoint{IP: ip("198.19.1.5"), Node: "n2"} }, `services[2].endpoints[0]: 198.19.1.5 is on node "n1" and "n2"`},
		{"zero target port", func(m *Model) { m.Services[0].Ports[1].TargetPort = 0 }, "services[0].ports[1]: zero port"},
		{"workload address of two pods", func(m *Model) { m.Workloads[1].IPs[1] = ip("198.19.1.5") }, "workloads[1].ips[1]: 198.19.1.5 is also workload default/web-1"},
		{"invalid workload address", func(m *Model) { m.Workloads[0].IPs[0] = netip.Addr{} }, "workloads[0].ips[0]: invalid address"},
		{"duplicate Meshlet", func(m *Model) { m.Meshlets[0].Name = "web" }, "meshlets[1]: duplicate Meshlet default/web"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := testModel()
			tt.mutate(&m)
			_, err := Build(m, "n1")
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want it to contain %q", err, tt.want)
			}
		})
	}
}

func TestMeshAccessors(t *testing.T) {
	s, err := Build(testModel(), "n1")
	if err != nil {
		t.Fatal(err)
	}
	src := s.Workload(ip("::ffff:198.19.2.9"))
	if src == nil || src.Name != "client-1" || s.Workload(ip("fd00:2::9")) != src {
		t.Fatalf("Workload by either address = %+v", src)
	}
	if s.Workload(ip("198.19.2.2")) != nil {
		t.Error("an endpoint without workload has one")
	}
	from := s.MeshletOf(src)
	to, svc := s.MeshletService("default", "web")
	if from == nil || to == nil || svc == nil || svc.MaxConn != 10 || !from.Uses(to.Namespace, to.Name, svc.Name) {
		t.Fatalf("client -> web: from %+v to %+v svc %+v", from, to, svc)
	}
	if s.Meshlet("default", "web") != to || s.Meshlet("default", "nope") != nil {
		t.Error("Meshlet by name")
	}
	if servers := s.Mesh().Servers(to); len(servers) != 1 || servers[0].Name != "web-1" {
		t.Errorf("servers of web = %+v", servers)
	}
	if m, sv := s.MeshletService("kube-system", "dns"); m != nil || sv != nil {
		t.Error("ungoverned service has a Meshlet")
	}
	var nilSnap *Snapshot
	if nilSnap.Workload(ip("198.19.1.5")) != nil || nilSnap.Meshlet("a", "b") != nil || nilSnap.MeshletOf(src) != nil || nilSnap.Mesh() != nil {
		t.Error("nil snapshot answers")
	}
	if m, sv := nilSnap.MeshletService("default", "web"); m != nil || sv != nil {
		t.Error("nil snapshot MeshletService")
	}
	// An empty table (before the first Update) answers nothing, safely.
	if w := NewTable("n1").Snapshot().Workload(ip("198.19.1.5")); w != nil {
		t.Errorf("empty table: %+v", w)
	}
}

func TestTableUpdate(t *testing.T) {
	tb := NewTable("n2")
	dst := ap("198.18.100.10:80")
	if r := tb.Lookup(dst); r.Kind != KindPassthrough {
		t.Fatalf("empty table: %v", r.Kind)
	}
	if err := tb.Update(testModel()); err != nil {
		t.Fatal(err)
	}
	r := tb.Lookup(dst)
	if r.Kind != KindService || r.Candidates[0].Local || !r.Candidates[1].Local {
		t.Fatalf("after update: %+v", r)
	}
	bad := testModel()
	bad.Nodes[1].Name = "n1"
	if err := tb.Update(bad); err == nil {
		t.Fatal("bad model accepted")
	}
	if r := tb.Lookup(dst); r.Kind != KindService {
		t.Fatalf("bad update replaced the table: %v", r.Kind)
	}
	if tb.Snapshot().Self() != "n2" {
		t.Error("Self")
	}
}

// TestConcurrentSwap runs lookups while the table is swapped; run with -race.
func TestConcurrentSwap(t *testing.T) {
	tb := NewTable("n1")
	m1 := testModel()
	m2 := testModel()
	m2.Services[0].Ports[0].TargetPort = 7070
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				r := tb.Lookup(ap("198.18.100.10:80"))
				if r.Kind == KindService {
					if p := r.Candidates[0].Addr.Port(); p != 8080 && p != 7070 {
						t.Errorf("torn route: port %d", p)
						return
					}
				}
			}
		}()
	}
	for i := range 200 {
		m := m1
		if i%2 == 1 {
			m = m2
		}
		if err := tb.Update(m); err != nil {
			t.Fatal(err)
		}
	}
	close(stop)
	wg.Wait()
}

func bigModel(nodes, services int) Model {
	var m Model
	for n := range nodes {
		m.Nodes = append(m.Nodes, Node{
			Name:     fmt.Sprintf("n%d", n),
			Tunnel:   netip.AddrPortFrom(netip.AddrFrom4([4]byte{198, 18, byte(n >> 8), byte(n)}), 15008),
			PodCIDRs: []netip.Prefix{netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(n >> 8), byte(n), 0}), 24)},
		})
	}
	for s := range services {
		svc := Service{
			Namespace: "default", Name: fmt.Sprintf("s%d", s),
			VIPs:  []netip.Addr{netip.AddrFrom4([4]byte{172, 16, byte(s >> 8), byte(s)})},
			Ports: []ServicePort{{Port: 80, TargetPort: 8080}},
		}
		for e := range 3 {
			n := (s + e) % nodes
			svc.Endpoints = append(svc.Endpoints, Endpoint{IP: netip.AddrFrom4([4]byte{10, byte(n >> 8), byte(n), byte(s%250 + 2)}), Node: fmt.Sprintf("n%d", n)})
		}
		m.Services = append(m.Services, svc)
	}
	return m
}

func BenchmarkLookup(b *testing.B) {
	tb := NewTable("n0")
	m := bigModel(500, 2000)
	// The checks' data rides along; Lookup must not pay for it.
	for _, svc := range m.Services {
		for i, ep := range svc.Endpoints {
			m.Workloads = append(m.Workloads, meshlet.Workload{Namespace: svc.Namespace, Name: fmt.Sprintf("%s-%d", svc.Name, i),
				IPs: []netip.Addr{ep.IP}, Node: ep.Node, Labels: map[string]string{meshlet.LabelMeshlet: svc.Name}})
		}
		m.Meshlets = append(m.Meshlets, meshlet.Meshlet{Namespace: svc.Namespace, Name: svc.Name,
			Spec: meshlet.Spec{Server: meshlet.Server{Services: []meshlet.Service{{Name: svc.Name}}}}})
	}
	m.Workloads = dedupWorkloads(m.Workloads)
	if err := tb.Update(m); err != nil {
		b.Fatal(err)
	}
	for _, bc := range []struct{ name, dst string }{
		{"service", "172.16.3.7:80"},
		{"endpoint", "10.0.5.9:8080"},
		{"cidr", "10.1.200.250:8080"},
		{"passthrough", "1.1.1.1:443"},
	} {
		dst := ap(bc.dst)
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				_ = tb.Lookup(dst)
			}
		})
	}
}

// dedupWorkloads keeps the first workload of each address (bigModel reuses
// endpoint addresses across services).
func dedupWorkloads(ws []meshlet.Workload) []meshlet.Workload {
	seen := map[netip.Addr]bool{}
	var out []meshlet.Workload
	for _, w := range ws {
		if !seen[w.IPs[0]] {
			seen[w.IPs[0]] = true
			out = append(out, w)
		}
	}
	return out
}

func BenchmarkMeshLookup(b *testing.B) {
	tb := NewTable("n0")
	m := testModel()
	if err := tb.Update(m); err != nil {
		b.Fatal(err)
	}
	src := ip("198.19.2.9")
	b.ReportAllocs()
	for b.Loop() {
		s := tb.Snapshot()
		w := s.Workload(src)
		from := s.MeshletOf(w)
		to, svc := s.MeshletService("default", "web")
		if !from.Uses(to.Namespace, to.Name, svc.Name) {
			b.Fatal("not allowed")
		}
	}
}
