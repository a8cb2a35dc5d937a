package decide

import (
	"net/netip"
	"testing"

	"github.com/meshless/meshless/daemon/inpod"
	"github.com/meshless/meshless/daemon/meshlet"
	"github.com/meshless/meshless/daemon/metrics"
	"github.com/meshless/meshless/daemon/routes"
)

// The access-control world, all in namespace default:
//
//	Meshlet web     serves service web (Kubernetes Service web, port 80 → 8080)
//	Meshlet client  declares client {meshlet: web, service: web}
//	Meshlet other   declares nothing
//
//	n1: pod a 198.18.232.2 (client), pod b 198.18.232.3 (web), pod c 198.18.232.4 (other)
//	n2: pod r 198.18.233.2 (client), pod s 198.18.233.3 (joined no Meshlet)
const (
	pA, pB, pC = "198.18.232.2", "198.18.232.3", "198.18.232.4"
	pR, pS     = "198.18.233.2", "198.18.233.3"
)

func policyModel(clientUsesWeb bool) routes.Model {
	wl := func(name, ip, node, m string) meshlet.Workload {
		w := meshlet.Workload{Namespace: "default", Name: name, IPs: []netip.Addr{netip.MustParseAddr(ip)}, Node: node, ServiceAccount: name}
		if m != "" {
			w.Labels = map[string]string{meshlet.LabelMeshlet: m}
		}
		return w
	}
	client := meshlet.Meshlet{Namespace: "default", Name: "client"}
	if clientUsesWeb {
		client.Spec.Client = []meshlet.ClientRef{{Meshlet: "web", Service: "web"}}
	}
	return routes.Model{
		Nodes: []routes.Node{
			{Name: "n1", PodCIDRs: []netip.Prefix{netip.MustParsePrefix("198.18.232.0/24")}},
			{Name: "n2", Tunnel: netip.MustParseAddrPort("198.18.0.2:15008"), PodCIDRs: []netip.Prefix{netip.MustParsePrefix("198.18.233.0/24")}},
		},
		Services: []routes.Service{{Namespace: "default", Name: "web", VIPs: []netip.Addr{netip.MustParseAddr("198.18.100.30")},
			Ports:     []routes.ServicePort{{Port: 80, TargetPort: 8080}},
			Endpoints: []routes.Endpoint{{IP: netip.MustParseAddr(pB), Node: "n1"}}}},
		Workloads: []meshlet.Workload{
			wl("a", pA, "n1", "client"), wl("b", pB, "n1", "web"), wl("c", pC, "n1", "other"),
			wl("r", pR, "n2", "client"), wl("s", pS, "n2", ""),
		},
		Meshlets: []meshlet.Meshlet{
			client,
			{Namespace: "default", Name: "other"},
			{Namespace: "default", Name: "web", Spec: meshlet.Spec{Server: meshlet.Server{Services: []meshlet.Service{{Name: "web"}}}}},
		},
	}
}

// policyWorld registers pods a, b and c and returns a decider over the
// model, and the pods by name.
func policyWorld(t *testing.T, mode AccessPolicy) (*Decider, *routes.Table, map[string]*inpod.Pod) {
	t.Helper()
	m, pods := registerPods(t, map[string]string{"a": pA, "b": pB, "c": pC})
	table := routes.NewTable("n1")
	if err := table.Update(policyModel(true)); err != nil {
		t.Fatal(err)
	}
	d, err := New(Config{Routes: table, Pods: m, AccessPolicy: mode, NodeAddrs: staticSet{netip.MustParseAddr("198.18.232.1"): true}})
	if err != nil {
		t.Fatal(err)
	}
	return d, table, pods
}

// TestAccess: each case of the Meshlets' access control, allowed ones
// beside refused ones, on each way a connection arrives.
func TestAccess(t *testing.T) {
	d, _, pods := policyWorld(t, Enforce)
	web := ap(pB + ":8080")
	tests := []struct {
		name    string
		a       Arrival
		refused string // "" allowed
		ticket  bool   // governed
	}{
		{"same node, declared client", Arrival{From: FromLocal, SrcPod: pods["a"], Src: ap(pA + ":1"), Dst: web, Service: "web"}, "", true},
		{"same node, Meshlet without the declaration", Arrival{From: FromLocal, SrcPod: pods["c"], Src: ap(pC + ":1"), Dst: web}, metrics.ReasonDenied, false},
		{"same node, by pod address", Arrival{From: FromLocal, SrcPod: pods["a"], Src: ap(pA + ":1"), Dst: web}, "", true},
		{"other node, declared client", Arrival{From: FromPeer, Peer: "n2", Src: ap(pR + ":1"), Dst: web}, "", true},
		{"other node, pod in no Meshlet", Arrival{From: FromPeer, Peer: "n2", Src: ap(pS + ":1"), Dst: web}, metrics.ReasonDenied, false},
		{"a port no Meshlet service has", Arrival{From: FromLocal, SrcPod: pods["c"], Src: ap(pC + ":1"), Dst: ap(pB + ":9090")}, "", false},
		{"a pod that serves no Meshlet", Arrival{From: FromLocal, SrcPod: pods["b"], Src: ap(pB + ":1"), Dst: ap(pC + ":8080")}, "", false},
		{"outside, the node (probe)", Arrival{From: FromOutside, Src: ap("198.18.232.1:5"), Dst: web}, "", true},
		{"outside, another client", Arrival{From: FromOutside, Src: ap("198.18.9.9:5"), Dst: web}, metrics.ReasonDenied, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			adm := d.Admit(tt.a)
			defer adm.Ticket.Done()
			if tt.refused != "" {
				if adm.Refused == nil || adm.Refused.Reason != tt.refused {
					t.Fatalf("refused %v, want %s", adm.Refused, tt.refused)
				}
				return
			}
			if adm.Refused != nil {
				t.Fatalf("refused: %v", adm.Refused)
			}
			if (adm.Ticket != nil) != tt.ticket {
				t.Errorf("ticket %v, want governed %v", adm.Ticket != nil, tt.ticket)
			}
		})
	}
	if n := d.Live(); n != 0 {
		t.Errorf("%d tickets left after Done", n)
	}
}

// TestAccessModes: audit lets a denied connection through and says why;
// off does not look.
func TestAccessModes(t *testing.T) {
	for _, mode := range []AccessPolicy{Audit, Off} {
		t.Run(mode.String(), func(t *testing.T) {
			d, _, pods := policyWorld(t, mode)
			adm := d.Admit(Arrival{From: FromLocal, SrcPod: pods["c"], Src: ap(pC + ":1"), Dst: ap(pB + ":8080")})
			if adm.Refused != nil {
				t.Fatalf("refused under %s: %v", mode, adm.Refused)
			}
			if audited := adm.Audited != nil && adm.Audited.Reason == metrics.ReasonDenied; audited != (mode == Audit) {
				t.Errorf("audited %v under %s", adm.Audited, mode)
			}
		})
	}
}

// TestRevalidate: a Meshlet change that withdraws a declaration closes
// the live connections it allowed, and only those.
func TestRevalidate(t *testing.T) {
	d, table, pods := policyWorld(t, Enforce)
	gov := d.Admit(Arrival{From: FromLocal, SrcPod: pods["a"], Src: ap(pA + ":1"), Dst: ap(pB + ":8080")})
	free := d.Admit(Arrival{From: FromLocal, SrcPod: pods["c"], Src: ap(pC + ":1"), Dst: ap(pB + ":9090")})
	if gov.Refused != nil || gov.Ticket == nil || free.Refused != nil || free.Ticket != nil {
		t.Fatalf("admissions: %+v, %+v", gov, free)
	}
	closed := make(chan string, 1)
	gov.Ticket.Attach(func(why string) { closed <- why })
	if n := d.Revalidate(); n != 0 {
		t.Fatalf("revalidate with the same Meshlets closed %d", n)
	}
	if err := table.Update(policyModel(false)); err != nil {
		t.Fatal(err)
	}
	if n := d.Revalidate(); n != 1 {
		t.Fatalf("revalidate closed %d, want 1", n)
	}
	if why := <-closed; why == "" {
		t.Error("closed without a reason")
	}
	if n := d.Live(); n != 0 {
		t.Errorf("%d live after the revocation", n)
	}
}
