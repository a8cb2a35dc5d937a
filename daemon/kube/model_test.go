package kube

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/meshless/meshless/daemon/routes"
	"github.com/meshless/meshless/internal/wellknown"
)

func ptr[T any](v T) *T { return &v }

func node(name, ip string, cidrs ...string) *corev1.Node {
	n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: corev1.NodeSpec{PodCIDRs: cidrs}}
	if len(cidrs) > 0 {
		n.Spec.PodCIDR = cidrs[0]
	}
	if ip != "" {
		n.Status.Addresses = []corev1.NodeAddress{{Type: corev1.NodeHostName, Address: name}, {Type: corev1.NodeInternalIP, Address: ip}}
	}
	return n
}

func svc(ns, name string, clusterIPs []string, ports ...corev1.ServicePort) *corev1.Service {
	s := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}, Spec: corev1.ServiceSpec{ClusterIPs: clusterIPs, Ports: ports}}
	if len(clusterIPs) > 0 {
		s.Spec.ClusterIP = clusterIPs[0]
	}
	return s
}

func sport(name string, port int32, target intstr.IntOrString) corev1.ServicePort {
	return corev1.ServicePort{Name: name, Port: port, TargetPort: target, Protocol: corev1.ProtocolTCP}
}

type epSpec struct {
	ip, node, pod string
	ready         *bool
}

func slice(ns, svcName, name string, ports map[string]int32, eps ...epSpec) *discoveryv1.EndpointSlice {
	es := &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Namespace: ns, Name: name, Labels: map[string]string{discoveryv1.LabelServiceName: svcName}},
		AddressType: discoveryv1.AddressTypeIPv4,
	}
	for n, p := range ports {
		es.Ports = append(es.Ports, discoveryv1.EndpointPort{Name: ptr(n), Port: ptr(p), Protocol: ptr(corev1.ProtocolTCP)})
	}
	for _, e := range eps {
		ep := discoveryv1.Endpoint{Addresses: []string{e.ip}, Conditions: discoveryv1.EndpointConditions{Ready: e.ready}}
		if e.node != "" {
			ep.NodeName = ptr(e.node)
		}
		if e.pod != "" {
			ep.TargetRef = &corev1.ObjectReference{Kind: "Pod", Namespace: ns, Name: e.pod}
		}
		es.Endpoints = append(es.Endpoints, ep)
	}
	return es
}

func pod(ns, name, nodeName string, labels map[string]string) *corev1.Pod {
	return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: labels}, Spec: corev1.PodSpec{NodeName: nodeName}}
}

func podFunc(pods ...*corev1.Pod) func(string, string) *corev1.Pod {
	return func(ns, name string) *corev1.Pod {
		for _, p := range pods {
			if p.Namespace == ns && p.Name == name {
				return p
			}
		}
		return nil
	}
}

var (
	ap  = netip.MustParseAddrPort
	a   = netip.MustParseAddr
	pfx = netip.MustParsePrefix
)

// translateCase is one input for Translate and the model and warnings it
// must give.
type translateCase struct {
	name     string
	in       Objects
	want     routes.Model
	warnings []string // substrings, in order
}

// TestTranslate runs the cases by theme; the subtests keep the cases' names.
func TestTranslate(t *testing.T) {
	for _, tt := range slices.Concat(translateNodeCases(), translateServiceCases(), translateEndpointCases()) {
		t.Run(tt.name, func(t *testing.T) { checkTranslate(t, tt) })
	}
}

// checkTranslate checks the model and warnings of tt, and that the model
// builds and is the same on a second run.
func checkTranslate(t *testing.T, tt translateCase) {
	got, warn := Translate(tt.in, wellknown.TunnelPort)
	if !reflect.DeepEqual(got, tt.want) {
		t.Errorf("model:\n got %+v\nwant %+v", got, tt.want)
	}
	if len(warn) != len(tt.warnings) {
		t.Errorf("warnings %q, want %d matching %q", warn, len(tt.warnings), tt.warnings)
	} else {
		for i := range warn {
			if !strings.Contains(warn[i], tt.warnings[i]) {
				t.Errorf("warning %d = %q, want it to contain %q", i, warn[i], tt.warnings[i])
			}
		}
	}
	// Whatever the input, the model must build.
	if _, err := routes.Build(got, "n1"); err != nil {
		t.Errorf("routes.Build: %v", err)
	}
	// Deterministic.
	again, _ := Translate(tt.in, wellknown.TunnelPort)
	if !reflect.DeepEqual(got, again) {
		t.Errorf("not deterministic")
	}
}

// translateNodeCases are the cases about nodes: tunnel address and pod CIDRs.
func translateNodeCases() []translateCase {
	return []translateCase{
		{
			name: "empty",
			want: routes.Model{},
		},
		{
			name: "nodes: InternalIP tunnel, podCIDRs, ExternalIP fallback, sorted",
			in: Objects{Nodes: []*corev1.Node{
				node("n2", "198.18.0.2", "198.19.2.0/24", "fd00:2::/64"),
				node("n1", "198.18.0.1", "198.19.1.0/24"),
				{ObjectMeta: metav1.ObjectMeta{Name: "n3"}, Status: corev1.NodeStatus{Addresses: []corev1.NodeAddress{{Type: corev1.NodeExternalIP, Address: "198.18.0.3"}}}, Spec: corev1.NodeSpec{PodCIDR: "198.19.3.7/24"}},
				node("n4", ""),
			}},
			want: routes.Model{Nodes: []routes.Node{
				{Name: "n1", Tunnel: ap("198.18.0.1:15008"), PodCIDRs: []netip.Prefix{pfx("198.19.1.0/24")}},
				{Name: "n2", Tunnel: ap("198.18.0.2:15008"), PodCIDRs: []netip.Prefix{pfx("198.19.2.0/24"), pfx("fd00:2::/64")}},
				{Name: "n3", Tunnel: ap("198.18.0.3:15008"), PodCIDRs: []netip.Prefix{pfx("198.19.3.0/24")}},
				{Name: "n4"},
			}},
		},
		{
			name: "overlapping pod CIDRs: the later node's is left out",
			in: Objects{Nodes: []*corev1.Node{
				node("n1", "198.18.0.1", "198.19.0.0/16"),
				node("n2", "198.18.0.2", "198.19.2.0/24"),
			}},
			want: routes.Model{Nodes: []routes.Node{
				{Name: "n1", Tunnel: ap("198.18.0.1:15008"), PodCIDRs: []netip.Prefix{pfx("198.19.0.0/16")}},
				{Name: "n2", Tunnel: ap("198.18.0.2:15008")},
			}},
			warnings: []string{"node n2: pod CIDR 198.19.2.0/24 overlaps 198.19.0.0/16 of node n1"},
		},
	}
}

// translateServiceCases are the cases about which services and ports make
// the model, and the VIPs and target ports they get.
func translateServiceCases() []translateCase {
	return []translateCase{
		{
			name: "service with ready endpoints, pod labels, node from slice",
			in: Objects{
				Services: []*corev1.Service{svc("default", "web", []string{"198.18.128.10"}, sport("http", 80, intstr.FromInt32(8080)))},
				EndpointSlices: []*discoveryv1.EndpointSlice{slice("default", "web", "web-abc", map[string]int32{"http": 8080},
					epSpec{ip: "198.19.2.2", node: "n2", pod: "web-2"},
					epSpec{ip: "198.19.1.2", node: "n1", pod: "web-1", ready: ptr(true)},
					epSpec{ip: "198.19.1.3", node: "n1", pod: "web-3", ready: ptr(false)},
				)},
				Pod: podFunc(pod("default", "web-1", "n1", map[string]string{"app": "web", "version": "v1"}), pod("default", "web-2", "n2", nil)),
			},
			want: routes.Model{Services: []routes.Service{{
				Namespace: "default", Name: "web",
				VIPs:  []netip.Addr{a("198.18.128.10")},
				Ports: []routes.ServicePort{{Name: "http", Port: 80, TargetPort: 8080}},
				Endpoints: []routes.Endpoint{
					{IP: a("198.19.1.2"), Node: "n1", Labels: map[string]string{"app": "web", "version": "v1"}},
					{IP: a("198.19.2.2"), Node: "n2"},
				},
			}}},
		},
		{
			name: "headless and ExternalName services are left out; UDP ports dropped; dual-stack VIPs",
			in: Objects{
				Services: []*corev1.Service{
					svc("default", "headless", []string{"None"}, sport("http", 80, intstr.FromInt32(80))),
					{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "ext"}, Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeExternalName, ExternalName: "example.com"}},
					svc("kube-system", "dns", []string{"198.18.128.53", "fd00:96::a"},
						corev1.ServicePort{Name: "dns", Port: 53, TargetPort: intstr.FromInt32(53), Protocol: corev1.ProtocolUDP},
						sport("dns-tcp", 53, intstr.FromInt32(53)),
					),
				},
			},
			want: routes.Model{Services: []routes.Service{{
				Namespace: "kube-system", Name: "dns",
				VIPs:  []netip.Addr{a("198.18.128.53"), a("fd00:96::a")},
				Ports: []routes.ServicePort{{Name: "dns-tcp", Port: 53, TargetPort: 53}},
			}}},
		},
		{
			name: "scaled to zero: VIP and ports stay, numeric or named target port",
			in: Objects{
				Services: []*corev1.Service{svc("default", "web", []string{"198.18.128.10"},
					sport("http", 80, intstr.FromInt32(8080)), sport("admin", 81, intstr.FromString("admin")))},
				EndpointSlices: []*discoveryv1.EndpointSlice{slice("default", "web", "web-abc", nil)},
			},
			want: routes.Model{Services: []routes.Service{{
				Namespace: "default", Name: "web",
				VIPs:  []netip.Addr{a("198.18.128.10")},
				Ports: []routes.ServicePort{{Name: "http", Port: 80, TargetPort: 8080}, {Name: "admin", Port: 81, TargetPort: 81}},
			}}},
		},
		{
			name: "named target port resolved by the slices; a minority number is left out",
			in: Objects{
				Services: []*corev1.Service{svc("default", "web", []string{"198.18.128.10"}, sport("http", 80, intstr.FromString("web")))},
				EndpointSlices: []*discoveryv1.EndpointSlice{
					slice("default", "web", "web-a", map[string]int32{"http": 8080}, epSpec{ip: "198.19.1.2", node: "n1"}, epSpec{ip: "198.19.1.3", node: "n1"}),
					slice("default", "web", "web-b", map[string]int32{"http": 9090}, epSpec{ip: "198.19.2.2", node: "n2"}),
				},
			},
			want: routes.Model{Services: []routes.Service{{
				Namespace: "default", Name: "web",
				VIPs:  []netip.Addr{a("198.18.128.10")},
				Ports: []routes.ServicePort{{Name: "http", Port: 80, TargetPort: 8080}},
				Endpoints: []routes.Endpoint{
					{IP: a("198.19.1.2"), Node: "n1"},
					{IP: a("198.19.1.3"), Node: "n1"},
				},
			}}},
			warnings: []string{"endpoint 198.19.2.2 serves port \"http\" on 9090, the others on 8080"},
		},
	}
}

// translateEndpointCases are the cases about endpoints: duplicates,
// conflicts, and EndpointSlices that must not count.
func translateEndpointCases() []translateCase {
	return []translateCase{
		{
			name: "same address in two slices is one endpoint; node from the pod when the slice has none",
			in: Objects{
				Services: []*corev1.Service{svc("default", "web", []string{"198.18.128.10"}, sport("", 80, intstr.FromInt32(8080)))},
				EndpointSlices: []*discoveryv1.EndpointSlice{
					slice("default", "web", "web-a", map[string]int32{"": 8080}, epSpec{ip: "198.19.1.2", pod: "p1"}),
					slice("default", "web", "web-b", map[string]int32{"": 8080}, epSpec{ip: "198.19.1.2", node: "n1"}),
				},
				Pod: podFunc(pod("default", "p1", "n1", map[string]string{"a": "b"})),
			},
			want: routes.Model{Services: []routes.Service{{
				Namespace: "default", Name: "web",
				VIPs:      []netip.Addr{a("198.18.128.10")},
				Ports:     []routes.ServicePort{{Port: 80, TargetPort: 8080}},
				Endpoints: []routes.Endpoint{{IP: a("198.19.1.2"), Node: "n1", Labels: map[string]string{"a": "b"}}},
			}}},
		},
		{
			name: "an address on two nodes and a VIP of two services are left out",
			in: Objects{
				Services: []*corev1.Service{
					svc("a", "one", []string{"198.18.128.10"}, sport("", 80, intstr.FromInt32(80))),
					svc("b", "two", []string{"198.18.128.11"}, sport("", 80, intstr.FromInt32(80))),
					svc("c", "three", []string{"198.18.128.10"}, sport("", 80, intstr.FromInt32(80))),
				},
				EndpointSlices: []*discoveryv1.EndpointSlice{
					slice("a", "one", "one-x", map[string]int32{"": 80}, epSpec{ip: "198.19.1.2", node: "n1"}),
					slice("b", "two", "two-x", map[string]int32{"": 80}, epSpec{ip: "198.19.1.2", node: "n2"}),
				},
			},
			want: routes.Model{Services: []routes.Service{
				{Namespace: "a", Name: "one", VIPs: []netip.Addr{a("198.18.128.10")}, Ports: []routes.ServicePort{{Port: 80, TargetPort: 80}},
					Endpoints: []routes.Endpoint{{IP: a("198.19.1.2"), Node: "n1"}}},
				{Namespace: "b", Name: "two", VIPs: []netip.Addr{a("198.18.128.11")}, Ports: []routes.ServicePort{{Port: 80, TargetPort: 80}}},
			}},
			warnings: []string{"service b/two: endpoint 198.19.1.2 on node \"n2\" is also on node \"n1\"", "service c/three: 198.18.128.10:80 is also service a/one"},
		},
		{
			name: "slices of other services, FQDN slices and unlabelled slices are ignored",
			in: Objects{
				Services: []*corev1.Service{svc("default", "web", []string{"198.18.128.10"}, sport("", 80, intstr.FromInt32(80)))},
				EndpointSlices: []*discoveryv1.EndpointSlice{
					slice("default", "other", "o", map[string]int32{"": 80}, epSpec{ip: "198.19.1.9", node: "n1"}),
					slice("other-ns", "web", "w", map[string]int32{"": 80}, epSpec{ip: "198.19.1.8", node: "n1"}),
					func() *discoveryv1.EndpointSlice {
						es := slice("default", "web", "f", map[string]int32{"": 80}, epSpec{ip: "198.19.1.7", node: "n1"})
						es.AddressType = discoveryv1.AddressTypeFQDN
						return es
					}(),
					func() *discoveryv1.EndpointSlice {
						es := slice("default", "web", "u", map[string]int32{"": 80}, epSpec{ip: "198.19.1.6", node: "n1"})
						es.Labels = nil
						return es
					}(),
				},
			},
			want: routes.Model{Services: []routes.Service{
				{Namespace: "default", Name: "web", VIPs: []netip.Addr{a("198.18.128.10")}, Ports: []routes.ServicePort{{Port: 80, TargetPort: 80}}},
			}},
		},
	}
}

func TestTranslateTunnelPort(t *testing.T) {
	m, _ := Translate(Objects{Nodes: []*corev1.Node{node("n1", "198.18.0.1")}}, 25008)
	if got := m.Nodes[0].Tunnel; got != ap("198.18.0.1:25008") {
		t.Fatalf("tunnel %v", got)
	}
}

// TestTranslateAlwaysBuilds feeds random, often inconsistent objects (the
// API shows such states for a moment: an address on two nodes, a reused
// VIP, overlapping CIDRs, ports that disagree) and checks that the model
// always builds a routing table.
func TestTranslateAlwaysBuilds(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	pick := func(n int) int { return r.IntN(n) }
	for iter := range 500 {
		var in Objects
		for i := range 1 + pick(4) {
			in.Nodes = append(in.Nodes, node(fmt.Sprintf("n%d", i), fmt.Sprintf("198.18.0.%d", pick(4)),
				fmt.Sprintf("198.19.%d.0/%d", pick(4), 16+8*pick(2))))
		}
		var pods []*corev1.Pod
		for i := range pick(6) {
			ns := fmt.Sprintf("ns%d", pick(2))
			name := fmt.Sprintf("s%d", i)
			ports := []corev1.ServicePort{}
			for j := range pick(3) {
				tp := intstr.FromInt32(int32(8000 + pick(3)))
				if pick(2) == 0 {
					tp = intstr.FromString("named")
				}
				ports = append(ports, sport(fmt.Sprintf("p%d", j), int32(80+pick(2)), tp))
			}
			in.Services = append(in.Services, svc(ns, name, []string{fmt.Sprintf("198.18.128.%d", pick(4))}, ports...))
			for k := range pick(3) {
				sp := map[string]int32{}
				for j := range 3 {
					sp[fmt.Sprintf("p%d", j)] = int32(8000 + pick(3))
				}
				var eps []epSpec
				for range pick(4) {
					e := epSpec{ip: fmt.Sprintf("198.19.%d.%d", pick(4), pick(4)), node: fmt.Sprintf("n%d", pick(5)), pod: fmt.Sprintf("p%d", pick(4))}
					if pick(3) == 0 {
						e.ready = ptr(pick(2) == 0)
					}
					if pick(4) == 0 {
						e.node = ""
					}
					eps = append(eps, e)
				}
				in.EndpointSlices = append(in.EndpointSlices, slice(ns, name, fmt.Sprintf("%s-%d", name, k), sp, eps...))
			}
			p := pod(ns, fmt.Sprintf("p%d", pick(4)), fmt.Sprintf("n%d", pick(4)), map[string]string{"i": fmt.Sprint(i), "meshless/meshlet": fmt.Sprintf("m%d", pick(3))})
			// Addresses reused across pods, pods listed twice, finished pods.
			for range pick(3) {
				p.Status.PodIPs = append(p.Status.PodIPs, corev1.PodIP{IP: fmt.Sprintf("198.19.%d.%d", pick(4), pick(4))})
			}
			if pick(4) == 0 {
				p.Status.Phase = corev1.PodSucceeded
			}
			pods = append(pods, p)
		}
		in.Pod = podFunc(pods...)
		in.Pods = pods
		// Meshlets that clash on names and services, some invalid.
		for i := range pick(5) {
			spec := fmt.Sprintf(`{"server":{"services":[{"name":"s%d","maxConn":%d}]}}`, pick(3), pick(3)-1)
			in.Meshlets = append(in.Meshlets, meshletObj(fmt.Sprintf("ns%d", pick(2)), fmt.Sprintf("m%d", pick(3)), time.Duration(i), spec))
		}
		m, _ := Translate(in, wellknown.TunnelPort)
		if _, err := routes.Build(m, "n0"); err != nil {
			t.Fatalf("iteration %d: %v\nmodel %+v", iter, err, m)
		}
	}
}
