package kube

import (
	"encoding/json"
	"net/netip"
	"reflect"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/meshless/meshless/daemon/meshlet"
	"github.com/meshless/meshless/daemon/routes"
	"github.com/meshless/meshless/internal/wellknown"
)

var t0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

// ipPod is a pod with addresses, a service account and a creation time.
func ipPod(ns, name, node, sa string, created time.Duration, labels map[string]string, ips ...string) *corev1.Pod {
	p := pod(ns, name, node, labels)
	p.CreationTimestamp = metav1.NewTime(t0.Add(created))
	p.Spec.ServiceAccountName = sa
	p.Status.Phase = corev1.PodRunning
	for _, ip := range ips {
		p.Status.PodIPs = append(p.Status.PodIPs, corev1.PodIP{IP: ip})
	}
	if len(ips) > 0 {
		p.Status.PodIP = ips[0]
	}
	return p
}

func TestTranslateWorkloads(t *testing.T) {
	web := map[string]string{meshlet.LabelMeshlet: "web", "version": "v1"}
	hostNet := ipPod("kube-system", "proxy", "n1", "proxy", 0, nil, "198.18.0.1")
	hostNet.Spec.HostNetwork = true
	done := ipPod("default", "job", "n1", "job", 0, nil, "198.19.1.9")
	done.Status.Phase = corev1.PodSucceeded
	onlyPodIP := ipPod("default", "old-style", "n2", "", 0, nil)
	onlyPodIP.Status.PodIP = "::ffff:198.19.2.4"
	terminating := ipPod("default", "leaving", "n1", "a", 0, nil, "198.19.1.5")
	terminating.DeletionTimestamp = &metav1.Time{Time: t0.Add(time.Hour)}

	tests := []struct {
		name     string
		pods     []*corev1.Pod
		want     []meshlet.Workload
		warnings []string
	}{
		{
			name: "pods with addresses, sorted; no host network, finished or unaddressed pods",
			pods: []*corev1.Pod{
				ipPod("shop", "web-2", "n2", "web", 0, web, "198.19.2.2", "fd00:2::2"),
				ipPod("shop", "web-1", "n1", "web", 0, web, "198.19.1.2"),
				hostNet, done,
				ipPod("default", "pending", "n1", "x", 0, nil),
				onlyPodIP,
			},
			want: []meshlet.Workload{
				{Namespace: "default", Name: "old-style", IPs: []netip.Addr{a("198.19.2.4")}, Node: "n2", ServiceAccount: "default"},
				{Namespace: "shop", Name: "web-1", IPs: []netip.Addr{a("198.19.1.2")}, Node: "n1", ServiceAccount: "web", Labels: web},
				{Namespace: "shop", Name: "web-2", IPs: []netip.Addr{a("198.19.2.2"), a("fd00:2::2")}, Node: "n2", ServiceAccount: "web", Labels: web},
			},
		},
		{
			name: "a reused address goes to the pod that is not terminating, then the newer one",
			pods: []*corev1.Pod{
				terminating,
				ipPod("default", "arriving", "n1", "b", -time.Hour, nil, "198.19.1.5"),
				ipPod("default", "old", "n1", "c", 0, nil, "198.19.1.6", "fd00:1::6"),
				ipPod("default", "new", "n1", "d", time.Minute, nil, "198.19.1.6"),
			},
			want: []meshlet.Workload{
				{Namespace: "default", Name: "arriving", IPs: []netip.Addr{a("198.19.1.5")}, Node: "n1", ServiceAccount: "b"},
				{Namespace: "default", Name: "new", IPs: []netip.Addr{a("198.19.1.6")}, Node: "n1", ServiceAccount: "d"},
				{Namespace: "default", Name: "old", IPs: []netip.Addr{a("fd00:1::6")}, Node: "n1", ServiceAccount: "c"},
			},
			warnings: []string{ // in the order of preference
				"pod default/old: address 198.19.1.6 is also pod default/new's; left out",
				"pod default/leaving: address 198.19.1.5 is also pod default/arriving's; left out",
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, warn := Translate(Objects{Pods: tt.pods}, wellknown.TunnelPort)
			if !reflect.DeepEqual(m.Workloads, tt.want) {
				t.Errorf("workloads:\n got %+v\nwant %+v", m.Workloads, tt.want)
			}
			if !reflect.DeepEqual(warn, tt.warnings) {
				t.Errorf("warnings %q, want %q", warn, tt.warnings)
			}
			if _, err := routes.Build(m, "n1"); err != nil {
				t.Errorf("routes.Build: %v", err)
			}
		})
	}
}

// meshletObj is a Meshlet object with spec given as JSON.
func meshletObj(ns, name string, created time.Duration, spec string) *MeshletObject {
	return &MeshletObject{
		TypeMeta:   metav1.TypeMeta{APIVersion: meshlet.APIVersion, Kind: meshlet.Kind},
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Generation: 1, CreationTimestamp: metav1.NewTime(t0.Add(created))},
		Spec:       json.RawMessage(spec),
	}
}

// accepted gives o the status of a Meshlet in use at generation gen.
func accepted(o *MeshletObject, gen int64) *MeshletObject {
	o.Status = MeshletStatus{ObservedGeneration: gen, Conditions: []metav1.Condition{
		{Type: ConditionAccepted, Status: metav1.ConditionTrue, Reason: ReasonValid, ObservedGeneration: gen},
	}}
	return o
}

func TestTranslateMeshlets(t *testing.T) {
	objs := []*MeshletObject{
		meshletObj("shop", "web", 0, `{"server":{"services":[{"name":"web","maxConn":10,"idleTimeout":"5m"}],"canary":[{"version":"v1","weight":100}]}}`),
		meshletObj("shop", "client", time.Second, `{"client":[{"meshlet":"web","service":"web"}]}`),
		meshletObj("shop", "bad-duration", 0, `{"server":{"services":[{"name":"x","idleTimeout":"9999999999h"}]}}`),
		meshletObj("shop", "unknown-field", 0, `{"server":{"services":[{"name":"y","maxconn":1}]}}`),
		meshletObj("shop", "wrong-type", 0, `{"server":{"services":[{"name":"z","maxConn":"ten"}]}}`),
		meshletObj("shop", "no-spec", 0, ``),
		meshletObj("shop", "newer-clash", time.Hour, `{"server":{"services":[{"name":"web"}]}}`),
		meshletObj("shop", strings.Repeat("n", 64), 0, `{}`),
		nil,
		// In use beats older: the status says incumbent serves web2.
		meshletObj("shop", "challenger", -time.Hour, `{"server":{"services":[{"name":"web2"}]}}`),
		accepted(meshletObj("shop", "incumbent", time.Hour, `{"server":{"services":[{"name":"web2"}]}}`), 1),
		// Accepted for an earlier generation (being edited) beats never.
		accepted(meshletObj("data", "edited", time.Hour, `{"server":{"services":[{"name":"db"}]}}`), 0),
		meshletObj("data", "newcomer", -time.Hour, `{"server":{"services":[{"name":"db"}]}}`),
	}
	tr := translate(Objects{Meshlets: objs}, wellknown.TunnelPort)
	var keys []string
	for _, m := range tr.model.Meshlets {
		keys = append(keys, m.Key())
	}
	if want := []string{"data/edited", "shop/client", "shop/incumbent", "shop/web"}; !reflect.DeepEqual(keys, want) {
		t.Fatalf("meshlets in the model %q, want %q", keys, want)
	}
	if s := tr.model.Meshlets[3].Spec.Server.Services[0]; s.MaxConn != 10 || s.IdleTimeout != "5m" {
		t.Errorf("spec decoded as %+v", s)
	}
	wantErrs := map[string]string{
		"bad-duration":          `spec.server.services[0].idleTimeout: invalid duration "9999999999h"`,
		"unknown-field":         `spec: unknown field "server.services[0].maxconn"`,
		"wrong-type":            "spec: json: cannot unmarshal string",
		"no-spec":               "spec: required",
		"newer-clash":           `spec.server.services[0].name: service "web" is already served by Meshlet shop/web`,
		strings.Repeat("n", 64): "metadata.name: invalid Meshlet name",
		"challenger":            `service "web2" is already served by Meshlet shop/incumbent`,
		"newcomer":              `service "db" is already served by Meshlet data/edited`,
	}
	if len(tr.meshlets) != 12 {
		t.Fatalf("%d results, want 12", len(tr.meshlets))
	}
	for _, r := range tr.meshlets {
		want, bad := wantErrs[r.obj.Name]
		switch {
		case !bad && len(r.errs) > 0:
			t.Errorf("%s rejected: %q", r.obj.Name, r.errs)
		case bad && (len(r.errs) != 1 || !strings.Contains(r.errs[0], want)):
			t.Errorf("%s: errors %q, want one with %q", r.obj.Name, r.errs, want)
		}
	}
	if len(tr.warn) != len(wantErrs) {
		t.Errorf("warnings %q, want %d", tr.warn, len(wantErrs))
	}
	for _, w := range tr.warn {
		if !strings.HasPrefix(w, "meshlet ") || !strings.Contains(w, " left out: ") {
			t.Errorf("warning %q", w)
		}
	}
}

func TestVerdict(t *testing.T) {
	o := meshletObj("shop", "web", 0, `{}`)
	o.Generation = 3
	ok := verdictOf(meshletResult{obj: o})
	bad := verdictOf(meshletResult{obj: o, errs: []string{"spec.server.services[0].maxConn: must be 0", "b: c"}})
	if ok.status != metav1.ConditionTrue || ok.reason != ReasonValid || ok.generation != 3 {
		t.Errorf("accepted verdict %+v", ok)
	}
	if bad.status != metav1.ConditionFalse || bad.reason != ReasonInvalid ||
		bad.message != "left out by meshlessd, fix: spec.server.services[0].maxConn: must be 0; b: c" {
		t.Errorf("rejected verdict %+v", bad)
	}
	long := verdictOf(meshletResult{obj: o, errs: []string{strings.Repeat("x", 10000)}})
	if len(long.message) != maxMessage {
		t.Errorf("message of %d bytes, want %d", len(long.message), maxMessage)
	}
	if upToDate(o, ok) {
		t.Error("no status is up to date")
	}
	o.Status = MeshletStatus{ObservedGeneration: 3, Conditions: []metav1.Condition{{Type: ConditionAccepted, Status: ok.status, Reason: ok.reason, Message: ok.message, ObservedGeneration: 3}}}
	if !upToDate(o, ok) || upToDate(o, bad) {
		t.Error("upToDate")
	}
	o.Generation, ok.generation = 4, 4
	if upToDate(o, ok) {
		t.Error("a status of generation 3 is up to date for 4")
	}
}

func TestPodChanged(t *testing.T) {
	base := func() *corev1.Pod { return ipPod("a", "p", "n1", "sa", 0, map[string]string{"x": "y"}, "198.19.1.2") }
	tests := []struct {
		name   string
		mutate func(*corev1.Pod)
		want   bool
	}{
		{"nothing", func(*corev1.Pod) {}, false},
		{"a condition", func(p *corev1.Pod) { p.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodReady}} }, false},
		{"phase Running to Pending", func(p *corev1.Pod) { p.Status.Phase = corev1.PodPending }, false},
		{"labels", func(p *corev1.Pod) { p.Labels = map[string]string{"x": "z"} }, true},
		{"node", func(p *corev1.Pod) { p.Spec.NodeName = "n2" }, true},
		{"addresses", func(p *corev1.Pod) { p.Status.PodIPs = nil; p.Status.PodIP = "" }, true},
		{"finished", func(p *corev1.Pod) { p.Status.Phase = corev1.PodFailed }, true},
		{"terminating", func(p *corev1.Pod) { p.DeletionTimestamp = &metav1.Time{Time: t0} }, true},
	}
	for _, tt := range tests {
		np := base()
		tt.mutate(np)
		if got := podChanged(base(), np); got != tt.want {
			t.Errorf("%s: podChanged = %v, want %v", tt.name, got, tt.want)
		}
	}
}

func TestTrimPodKeepsIdentity(t *testing.T) {
	p := ipPod("shop", "web-1", "n1", "web", 0, map[string]string{"a": "b"}, "198.19.1.2")
	p.Spec.Containers = []corev1.Container{{Name: "c"}}
	p.ManagedFields = []metav1.ManagedFieldsEntry{{Manager: "kubelet"}}
	o, err := trimPod(p)
	if err != nil {
		t.Fatal(err)
	}
	got := o.(*corev1.Pod)
	if got.Spec.ServiceAccountName != "web" || !got.CreationTimestamp.Equal(&p.CreationTimestamp) || got.Labels["a"] != "b" {
		t.Errorf("trimmed pod lost identity: %+v", got)
	}
	if got.ManagedFields != nil || got.Spec.Containers != nil {
		t.Error("trimmed pod keeps what nobody uses")
	}
}

func TestTrimMeshlet(t *testing.T) {
	o := meshletObj("shop", "web", 0, `{"client":[]}`)
	o.ManagedFields = []metav1.ManagedFieldsEntry{{Manager: "kubectl"}}
	o.Annotations = map[string]string{"kubectl.kubernetes.io/last-applied-configuration": strings.Repeat("x", 1000)}
	o.ResourceVersion, o.UID = "42", "u"
	got, err := trimMeshlet(o)
	if err != nil {
		t.Fatal(err)
	}
	m := got.(*MeshletObject)
	if m.ManagedFields != nil || m.Annotations != nil {
		t.Error("trimmed Meshlet keeps managed fields or annotations")
	}
	if m.Name != "web" || m.Namespace != "shop" || m.ResourceVersion != "42" || m.Generation != 1 || m.CreationTimestamp.IsZero() || string(m.Spec) != `{"client":[]}` {
		t.Errorf("trimmed Meshlet lost what the source uses: %+v", m)
	}
	if c := m.DeepCopy(); !reflect.DeepEqual(c, m) || &c.Spec[0] == &m.Spec[0] {
		t.Error("DeepCopy")
	}
}
