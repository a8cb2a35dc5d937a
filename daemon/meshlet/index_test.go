package meshlet

import (
	"net/netip"
	"slices"
	"strings"
	"testing"
)

func wl(ns, name, ip, node string, labels map[string]string) Workload {
	return Workload{Namespace: ns, Name: name, IPs: []netip.Addr{netip.MustParseAddr(ip)}, Node: node, ServiceAccount: name + "-sa", Labels: labels}
}

func member(meshlet string, kv ...string) map[string]string {
	l := map[string]string{LabelMeshlet: meshlet}
	for i := 0; i+1 < len(kv); i += 2 {
		l[kv[i]] = kv[i+1]
	}
	return l
}

// fixture: Meshlet shop/web serves from its members labelled
// role=server; shop/cart has no selector; data/db is a client only.
func fixture(t *testing.T) *Index {
	t.Helper()
	web := shop() // selector role=server, example.com/tier=front
	cart := Meshlet{Namespace: "shop", Name: "cart", Spec: Spec{Server: Server{Services: []Service{{Name: "api"}}}}}
	db := Meshlet{Namespace: "data", Name: "db", Spec: Spec{Client: []ClientRef{{Namespace: "shop", Meshlet: "web", Service: "web"}}}}
	ws := []Workload{
		wl("shop", "web-1", "198.19.1.2", "n1", member("web", "role", "server", "example.com/tier", "front", "version", "v1")),
		wl("shop", "web-2", "198.19.2.2", "n2", member("web", "role", "server", "example.com/tier", "front", "version", "v2")),
		wl("shop", "web-job", "198.19.1.3", "n1", member("web", "role", "job")), // member, not a server
		wl("shop", "cart-1", "198.19.1.4", "n1", member("cart")),
		wl("shop", "stray", "198.19.1.5", "n1", map[string]string{"role": "server", "example.com/tier": "front"}), // selector matches, did not join
		wl("other", "web-x", "198.19.1.6", "n1", member("web", "role", "server", "example.com/tier", "front")),    // other namespace
		wl("data", "db-1", "198.19.2.7", "n2", member("db")),
		wl("shop", "ghost", "198.19.2.8", "n2", member("nope")), // joined a Meshlet that does not exist
	}
	ws[1].IPs = append(ws[1].IPs, netip.MustParseAddr("fd00:2::2"))
	x, err := NewIndex(ws, []Meshlet{web, cart, db})
	if err != nil {
		t.Fatal(err)
	}
	return x
}

func names(ws []*Workload) []string {
	var s []string
	for _, w := range ws {
		s = append(s, w.Name)
	}
	return s
}

func TestIndexMembership(t *testing.T) {
	x := fixture(t)
	tests := []struct {
		ip      string
		pod     string // "" = no workload
		meshlet string // "" = none
		serves  bool
	}{
		{"198.19.1.2", "web-1", "shop/web", true},
		{"::ffff:198.19.2.2", "web-2", "shop/web", true},
		{"fd00:2::2", "web-2", "shop/web", true},
		{"198.19.1.3", "web-job", "shop/web", false},
		{"198.19.1.4", "cart-1", "shop/cart", true},
		{"198.19.1.5", "stray", "", false},
		{"198.19.1.6", "web-x", "", false},
		{"198.19.2.7", "db-1", "data/db", true}, // a member; it has no services to serve
		{"198.19.2.8", "ghost", "", false},
		{"198.19.9.9", "", "", false},
	}
	for _, tt := range tests {
		w := x.Workload(netip.MustParseAddr(tt.ip))
		if (w == nil) != (tt.pod == "") || (w != nil && w.Name != tt.pod) {
			t.Errorf("Workload(%s) = %+v, want %q", tt.ip, w, tt.pod)
			continue
		}
		m := x.MeshletOf(w)
		got := ""
		if m != nil {
			got = m.Key()
		}
		if got != tt.meshlet {
			t.Errorf("MeshletOf(%s) = %q, want %q", tt.pod, got, tt.meshlet)
		}
		if m != nil && m.Serves(w) != tt.serves {
			t.Errorf("%s serves %s = %v, want %v", tt.pod, got, !tt.serves, tt.serves)
		}
	}
}

func TestIndexServices(t *testing.T) {
	x := fixture(t)
	m, s := x.Service("shop", "web")
	if m == nil || m.Name != "web" || s.MaxConn != 100 {
		t.Fatalf("Service(shop, web) = %v %v", m, s)
	}
	if got := names(x.Servers(m)); !slices.Equal(got, []string{"web-1", "web-2"}) {
		t.Errorf("servers of shop/web = %v", got)
	}
	if got := x.Versions(m); !slices.Equal(got, []string{"v1", "v2"}) {
		t.Errorf("versions of shop/web = %v", got)
	}
	cart := x.Meshlet("shop", "cart")
	if got := names(x.Servers(cart)); !slices.Equal(got, []string{"cart-1"}) {
		t.Errorf("servers of shop/cart (no selector: every member) = %v", got)
	}
	if got := x.Versions(cart); !slices.Equal(got, []string{""}) {
		t.Errorf("versions of shop/cart = %q, want the unversioned one", got)
	}
	if m, s := x.Service("shop", "nothing"); m != nil || s != nil {
		t.Errorf("ungoverned service: %v %v", m, s)
	}
	if m, _ := x.Service("other", "web"); m != nil {
		t.Errorf("service of another namespace: %v", m)
	}
	// Who may call shop/web's service web: data/db declares it.
	if db := x.Meshlet("data", "db"); !db.Uses("shop", "web", "web") || db.Uses("shop", "web", "admin") {
		t.Error("data/db Uses")
	}
	// A ClientRef without namespace is the client's own namespace.
	web := x.Meshlet("shop", "web")
	if !web.Uses("shop", "cart", "api") || web.Uses("data", "cart", "api") {
		t.Error("ClientRef default namespace")
	}
	if w, ok := web.Weight("v2"); w != 10 || !ok {
		t.Errorf("Weight(v2) = %d %v", w, ok)
	}
	if w, ok := web.Weight("v3"); w != 0 || !ok {
		t.Errorf("Weight of an unlisted version = %d %v, want 0 (weighted)", w, ok)
	}
	if _, ok := cart.Weight("v1"); ok {
		t.Error("a Meshlet without canary is weighted")
	}
	if web.Service("admin").IdleTimeout != "1h30m" || web.Service("x") != nil {
		t.Error("Meshlet.Service")
	}
}

func TestIndexNil(t *testing.T) {
	var x *Index
	ip := netip.MustParseAddr("198.19.1.2")
	if x.Workload(ip) != nil || x.Meshlet("a", "b") != nil || x.MeshletOf(&Workload{Labels: member("b")}) != nil || x.Servers(nil) != nil {
		t.Error("nil index answers")
	}
	if m, s := x.Service("a", "b"); m != nil || s != nil {
		t.Error("nil index Service")
	}
}

func TestNewIndexErrors(t *testing.T) {
	a := wl("shop", "a", "198.19.1.2", "n1", nil)
	tests := []struct {
		name string
		ws   []Workload
		ms   []Meshlet
		want string
	}{
		{"unnamed workload", []Workload{{Namespace: "x"}}, nil, "workloads[0]: empty name"},
		{"invalid address", []Workload{{Name: "a", IPs: []netip.Addr{{}}}}, nil, "workloads[0].ips[0]: invalid address"},
		{"address of two workloads", []Workload{a, wl("shop", "b", "::ffff:198.19.1.2", "n2", nil)}, nil, "workloads[1].ips[0]: ::ffff:198.19.1.2 is also workload shop/a"},
		{"same pod twice", []Workload{a, wl("shop", "a", "198.19.1.3", "n1", nil)}, nil, "workloads[1]: shop/a is also workloads[0]"},
		{"same Meshlet twice", nil, []Meshlet{shop(), shop()}, "meshlets[1]: duplicate Meshlet shop/web"},
		{"service served twice", nil, []Meshlet{shop(), {Namespace: "shop", Name: "b", Spec: Spec{Server: Server{Services: []Service{{Name: "admin"}}}}}},
			"meshlets[1].spec.server.services[0]: service shop/admin is also served by Meshlet shop/web"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := NewIndex(tt.ws, tt.ms)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want %q", err, tt.want)
			}
		})
	}
}

func TestWorkloadIdentity(t *testing.T) {
	w := Workload{Namespace: "shop", Name: "web-1", ServiceAccount: "web"}
	if got := w.Identity("cluster.local"); got != "spiffe://cluster.local/ns/shop/sa/web" {
		t.Errorf("Identity = %q", got)
	}
	w.ServiceAccount = ""
	if got := w.Identity("example.org"); got != "spiffe://example.org/ns/shop/sa/default" {
		t.Errorf("Identity without service account = %q", got)
	}
}
