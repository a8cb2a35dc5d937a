package decide

import (
	"context"
	"net"
	"net/netip"
	"path/filepath"
	"testing"

	"github.com/meshless/meshless/daemon/inpod"
	"github.com/meshless/meshless/daemon/meshletdir"
	"github.com/meshless/meshless/daemon/metrics"
	"github.com/meshless/meshless/daemon/podstore"
	"github.com/meshless/meshless/daemon/routes"
	"github.com/meshless/meshless/internal/podtest"
)

// The decisions read registered pods, so the tests register real pods
// (netns with addresses) with a real inpod.Manager; no connection is made.
//
//	n1: 198.18.230.2 (pod "a", namespace default), 198.18.230.3 (pod "b")
//	n2: 198.18.231.0/24, tunnel 198.18.0.2:15008
//	198.18.230.9 is in n1's CIDR but no pod of this daemon
const (
	ipA, ipB, ipGhost = "198.18.230.2", "198.18.230.3", "198.18.230.9"
	ipRemote          = "198.18.231.2"
	vip               = "198.18.100.20"
)

type nopHandler struct{}

func (nopHandler) HandleConn(_ context.Context, _ *inpod.Pod, _ inpod.Direction, c *net.TCPConn) {
	c.Close()
}

// registerPods starts a pod manager with a pod per id → address, each in
// a netns of its own, and returns it with the pods by id.
func registerPods(t *testing.T, ips map[string]string) (*inpod.Manager, map[string]*inpod.Pod) {
	t.Helper()
	store, err := podstore.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	m, err := inpod.New(inpod.Config{Store: store, Handler: nopHandler{}})
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	pods := map[string]*inpod.Pod{}
	for id, ip := range ips {
		n := podtest.NewPod(t, ip+"/24")
		if _, err := m.Register(context.Background(), podtest.Pod(id, n, ip)); err != nil {
			t.Fatal(err)
		}
		pods[id], _ = m.PodByIP(netip.MustParseAddr(ip))
	}
	return m, pods
}

func newDecider(t *testing.T, cfg Config) (*Decider, *inpod.Manager) {
	t.Helper()
	m, _ := registerPods(t, map[string]string{"a": ipA, "b": ipB})
	table := routes.NewTable("n1")
	ep := func(ip, node string) routes.Endpoint { return routes.Endpoint{IP: netip.MustParseAddr(ip), Node: node} }
	err := table.Update(routes.Model{
		Nodes: []routes.Node{
			{Name: "n1", PodCIDRs: []netip.Prefix{netip.MustParsePrefix("198.18.230.0/24")}},
			{Name: "n2", Tunnel: netip.MustParseAddrPort("198.18.0.2:15008"), PodCIDRs: []netip.Prefix{netip.MustParsePrefix("198.18.231.0/24")}},
		},
		Services: []routes.Service{
			{Namespace: "default", Name: "web", VIPs: []netip.Addr{netip.MustParseAddr(vip)},
				Ports:     []routes.ServicePort{{Port: 80, TargetPort: 8080}},
				Endpoints: []routes.Endpoint{ep(ipRemote, "n2"), ep(ipB, "n1"), ep(ipGhost, "n1")}},
			{Namespace: "default", Name: "empty", VIPs: []netip.Addr{netip.MustParseAddr("198.18.100.21")},
				Ports: []routes.ServicePort{{Port: 80, TargetPort: 8080}}},
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	cfg.Routes, cfg.Pods = table, m
	d, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return d, m
}

func ap(s string) netip.AddrPort { return netip.MustParseAddrPort(s) }

// TestOutbound: each kind of destination gets its targets, in launch
// order, and a service without endpoints is refused.
func TestOutbound(t *testing.T) {
	d, m := newDecider(t, Config{})
	pa, _ := m.PodByIP(netip.MustParseAddr(ipA))
	src := ap(ipA + ":40000")
	tests := []struct {
		name    string
		dst     string
		service string
		want    []Target
		refused string
	}{
		{"outside the mesh", "192.0.2.1:443", "", []Target{{Addr: ap("192.0.2.1:443"), Via: ViaDirect}}, ""},
		{"local pod", ipB + ":8080", "", []Target{{Addr: ap(ipB + ":8080"), Node: "n1", Via: ViaLocal}}, ""},
		{"remote pod", ipRemote + ":8080", "", []Target{{Addr: ap(ipRemote + ":8080"), Node: "n2", Via: ViaTunnel,
			Tunnel: ap("198.18.0.2:15008"), Priority: priorityRemote}}, ""},
		{"unregistered local address", ipGhost + ":8080", "", []Target{{Addr: ap(ipGhost + ":8080"), Node: "n1", Via: ViaDirect,
			Priority: priorityRemote}}, ""},
		{"service", vip + ":80", "default/web", []Target{
			{Addr: ap(ipRemote + ":8080"), Node: "n2", Via: ViaTunnel, Tunnel: ap("198.18.0.2:15008"), Priority: priorityRemote},
			{Addr: ap(ipB + ":8080"), Node: "n1", Via: ViaLocal, Priority: priorityLocal},
			{Addr: ap(ipGhost + ":8080"), Node: "n1", Via: ViaDirect, Priority: priorityRemote},
		}, ""},
		{"service without endpoints", "198.18.100.21:80", "default/empty", nil, metrics.ReasonNoEndpoints},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := d.Outbound(pa, src, ap(tt.dst))
			if p.Service != tt.service {
				t.Errorf("service %q, want %q", p.Service, tt.service)
			}
			if tt.refused != "" {
				if p.Refused == nil || p.Refused.Reason != tt.refused {
					t.Fatalf("refused %v, want %s", p.Refused, tt.refused)
				}
				return
			}
			if p.Refused != nil {
				t.Fatalf("refused: %v", p.Refused)
			}
			if len(p.Targets) != len(tt.want) {
				t.Fatalf("targets %+v, want %+v", p.Targets, tt.want)
			}
			for i := range tt.want {
				if g, w := p.Targets[i], tt.want[i]; g.Addr != w.Addr || g.Node != w.Node || g.Via != w.Via || g.Tunnel != w.Tunnel || g.Priority != w.Priority {
					t.Errorf("target %d %+v, want %+v", i, p.Targets[i], tt.want[i])
				}
			}
		})
	}
}

// TestAdmit: the destination side finds the pod, its unix socket and the
// source to bind, refuses what is not here, and applies the inbound policy
// to connections from outside only.
func TestAdmit(t *testing.T) {
	nodeAddrs := staticSet{netip.MustParseAddr("198.18.230.1"): true}
	dir := t.TempDir()
	layout, err := meshletdir.Parse(dir)
	if err != nil {
		t.Fatal(err)
	}
	d, m := newDecider(t, Config{Meshlets: layout, InboundPolicy: Strict, NodeAddrs: nodeAddrs})
	pb, _ := m.PodByIP(netip.MustParseAddr(ipB))
	sockB := func(name string) string { return filepath.Join(dir, "default", pb.Spec().Name, "server", name) }
	tests := []struct {
		name    string
		a       Arrival
		socket  string
		bind    string
		refused string
	}{
		{"local, by service", Arrival{From: FromLocal, Dst: ap(ipB + ":8080"), Src: ap(ipA + ":40000"), Service: "web"}, sockB("web"), ipA, ""},
		{"peer, by port", Arrival{From: FromPeer, Peer: "n2", Dst: ap(ipB + ":8080"), Src: ap(ipRemote + ":40000")}, sockB("8080"), ipRemote, ""},
		{"peer, no source", Arrival{From: FromPeer, Peer: "n2", Dst: ap(ipB + ":8080")}, "", "", metrics.ReasonPeerSource},
		{"peer speaking for another node's pod", Arrival{From: FromPeer, Peer: "n2", Dst: ap(ipB + ":8080"), Src: ap(ipA + ":40000")}, "", "", metrics.ReasonPeerSource},
		{"path tricks in the service name", Arrival{From: FromPeer, Peer: "n2", Dst: ap(ipB + ":8080"), Src: ap(ipRemote + ":1"), Service: ".."}, "", ipRemote, ""},
		{"not a pod of this node", Arrival{From: FromPeer, Peer: "n2", Dst: ap(ipGhost + ":8080"), Src: ap(ipRemote + ":1")}, "", "", metrics.ReasonForbidden},
		{"outside, not a node address", Arrival{From: FromOutside, Dst: ap(ipB + ":8080"), Src: ap("198.18.230.77:5000")}, "", "", metrics.ReasonInboundPolicy},
		{"outside, a node address", Arrival{From: FromOutside, Dst: ap(ipB + ":8080"), Src: ap("198.18.230.1:5000")}, "", "198.18.230.1", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			adm := d.Admit(tt.a)
			if tt.refused != "" {
				if adm.Refused == nil || adm.Refused.Reason != tt.refused {
					t.Fatalf("refused %v, want %s", adm.Refused, tt.refused)
				}
				return
			}
			if adm.Refused != nil {
				t.Fatalf("refused: %v", adm.Refused)
			}
			if adm.Pod != pb {
				t.Errorf("pod %v, want b", adm.Pod.Key())
			}
			if adm.Socket != tt.socket {
				t.Errorf("socket %q, want %q", adm.Socket, tt.socket)
			}
			if got := adm.Bind.String(); (tt.bind == "" && adm.Bind.IsValid()) || (tt.bind != "" && got != tt.bind) {
				t.Errorf("bind %v, want %q", adm.Bind, tt.bind)
			}
		})
	}
}

type staticSet map[netip.Addr]bool

func (s staticSet) Contains(a netip.Addr) bool { return s[a] }
