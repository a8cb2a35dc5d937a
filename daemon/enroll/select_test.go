package enroll

import (
	"context"
	"errors"
	"net/netip"
	"slices"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/meshless/meshless/daemon/cniapi"
	"github.com/meshless/meshless/internal/redirect"
)

const node = "n1"

func pod(name string, mod ...func(*corev1.Pod)) *corev1.Pod {
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: name, UID: types.UID("uid-" + name)},
		Spec:       corev1.PodSpec{NodeName: node},
		Status:     corev1.PodStatus{Phase: corev1.PodRunning, PodIP: "198.19.1.10", PodIPs: []corev1.PodIP{{IP: "198.19.1.10"}}},
	}
	for _, m := range mod {
		m(p)
	}
	return p
}

func TestSelect(t *testing.T) {
	tests := []struct {
		name   string
		pod    *corev1.Pod
		reg    []cniapi.PodStatus
		want   bool   // enrolled
		reason string // skip reason, "" when not listed at all
	}{
		{name: "running pod", pod: pod("a"), want: true},
		{name: "excluded namespace", pod: pod("a", func(p *corev1.Pod) { p.Namespace = "kube-system" }), reason: "namespace excluded"},
		{name: "annotation opt-out", pod: pod("a", func(p *corev1.Pod) { p.Annotations = map[string]string{"meshless.io/mesh": "disabled"} }), reason: "annotation meshless.io/mesh=disabled"},
		{name: "annotation enabled", pod: pod("a", func(p *corev1.Pod) { p.Annotations = map[string]string{"meshless.io/mesh": "enabled"} }), want: true},
		{name: "bad annotation", pod: pod("a", func(p *corev1.Pod) { p.Annotations = map[string]string{"meshless.io/exclude-inbound-ports": "x"} }), reason: "invalid annotation: annotation meshless.io/exclude-inbound-ports[0]: \"x\" is not a port number"},
		{name: "hostNetwork", pod: pod("a", func(p *corev1.Pod) { p.Spec.HostNetwork = true }), reason: "hostNetwork"},
		{name: "registered by UID", pod: pod("a"), reg: []cniapi.PodStatus{{Pod: cniapi.Pod{UID: "uid-a", IPs: []netip.Addr{netip.MustParseAddr("198.19.1.99")}}}}, reason: "registered"},
		{name: "registered by IP", pod: pod("a"), reg: []cniapi.PodStatus{{Pod: cniapi.Pod{UID: "other", IPs: []netip.Addr{netip.MustParseAddr("198.19.1.10")}}}}, reason: "registered"},
		{name: "other node", pod: pod("a", func(p *corev1.Pod) { p.Spec.NodeName = "n2" })},
		{name: "unscheduled", pod: pod("a", func(p *corev1.Pod) { p.Spec.NodeName = "" })},
		{name: "no IP", pod: pod("a", func(p *corev1.Pod) { p.Status.PodIP, p.Status.PodIPs = "", nil }), reason: "no pod IP"},
		{name: "pending", pod: pod("a", func(p *corev1.Pod) { p.Status.Phase = corev1.PodPending }), reason: "phase Pending"},
		{name: "succeeded", pod: pod("a", func(p *corev1.Pod) { p.Status.Phase = corev1.PodSucceeded }), reason: "phase Succeeded"},
		{name: "terminating", pod: pod("a", func(p *corev1.Pod) { p.DeletionTimestamp = &metav1.Time{} }), reason: "terminating"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cands, skipped := Select([]*corev1.Pod{tt.pod}, node, DefaultExcludeNamespaces, registered(tt.reg))
			if got := len(cands) == 1; got != tt.want {
				t.Fatalf("enrolled = %v, want %v (skipped %v)", got, tt.want, skipped)
			}
			var reason string
			if len(skipped) == 1 {
				reason = skipped[0].Reason
			}
			if reason != tt.reason {
				t.Errorf("skip reason %q, want %q", reason, tt.reason)
			}
		})
	}
}

func TestSelectExclusionsAndIPs(t *testing.T) {
	p := pod("a", func(p *corev1.Pod) {
		p.Annotations = map[string]string{"meshless.io/exclude-inbound-ports": "9090,22", "meshless.io/exclude-outbound-cidrs": "198.18.7.1"}
		p.Status.PodIPs = append(p.Status.PodIPs, corev1.PodIP{IP: "fd00::10"})
	})
	cands, _ := Select([]*corev1.Pod{p}, node, nil, registered(nil))
	if len(cands) != 1 {
		t.Fatal("not selected")
	}
	c := cands[0]
	if !slices.Equal(c.IPs, []netip.Addr{netip.MustParseAddr("198.19.1.10"), netip.MustParseAddr("fd00::10")}) {
		t.Errorf("IPs %v", c.IPs)
	}
	if !slices.Equal(c.Exclusions.InboundPorts, []uint16{22, 9090}) || len(c.Exclusions.OutboundCIDRs) != 1 || c.Exclusions.OutboundCIDRs[0].String() != "198.18.7.1/32" {
		t.Errorf("exclusions %+v", c.Exclusions)
	}
	// An empty exclusion list meshes kube-system too.
	if cands, _ := Select([]*corev1.Pod{pod("k", func(p *corev1.Pod) { p.Namespace = "kube-system" })}, node, []string{}, registered(nil)); len(cands) != 1 {
		t.Error("kube-system not selected with an empty exclusion list")
	}
}

func TestStale(t *testing.T) {
	pods := []*corev1.Pod{pod("live"), pod("done", func(p *corev1.Pod) { p.Status.Phase = corev1.PodSucceeded })}
	reg := func(uid, cid string) cniapi.PodStatus {
		return cniapi.PodStatus{Pod: cniapi.Pod{UID: uid, Attachment: cniapi.Attachment{ContainerID: cid, IfName: "eth0"}}}
	}
	got := Stale([]cniapi.PodStatus{
		reg("uid-live", "enrolled-uid-live"),
		reg("uid-done", "enrolled-uid-done"),
		reg("uid-gone", "enrolled-uid-gone"),
		reg("uid-cni", "abcdef"), // CNI's: the runtime's DEL handles it
	}, pods, node)
	var uids []string
	for _, r := range got {
		uids = append(uids, r.UID)
	}
	if !slices.Equal(uids, []string{"uid-done", "uid-gone"}) {
		t.Errorf("stale %v, want [uid-done uid-gone]", uids)
	}
}

// fakes for Pass.

type fakeAgent struct {
	calls []string
	regs  map[string]cniapi.PodStatus
	fail  error
}

func (a *fakeAgent) Register(_ context.Context, p *cniapi.Pod) (*cniapi.PodStatus, error) {
	a.calls = append(a.calls, "register "+p.Key())
	if a.fail != nil {
		return nil, a.fail
	}
	st := cniapi.PodStatus{Pod: *p}
	a.regs[p.Key()] = st
	return &st, nil
}

func (a *fakeAgent) Deregister(_ context.Context, att cniapi.Attachment) error {
	a.calls = append(a.calls, "deregister "+att.Key())
	delete(a.regs, att.Key())
	return nil
}

func (a *fakeAgent) List() []cniapi.PodStatus {
	var l []cniapi.PodStatus
	for _, r := range a.regs {
		l = append(l, r)
	}
	return l
}

type fakeNetns []Netns

func (f fakeNetns) List() ([]Netns, error) { return f, nil }

type fakeRules struct {
	a    *fakeAgent
	fail error
}

func (r *fakeRules) Apply(path string, spec redirect.Spec) (string, error) {
	r.a.calls = append(r.a.calls, "rules "+path)
	return "fake", r.fail
}

func (r *fakeRules) Remove(path string) error {
	r.a.calls = append(r.a.calls, "remove "+path)
	return nil
}

func TestPass(t *testing.T) {
	ag := &fakeAgent{regs: map[string]cniapi.PodStatus{}}
	rules := &fakeRules{a: ag}
	pods := []*corev1.Pod{pod("a"), pod("b", func(p *corev1.Pod) { p.Status.PodIP, p.Status.PodIPs = "198.19.1.11", nil })}
	synced := false
	e, err := New(Config{
		NodeName: node, Agent: ag, Rules: rules,
		Pods: func() ([]*corev1.Pod, bool) { return pods, synced },
		Netns: fakeNetns{
			{Path: "/run/netns/a", Ino: 1, Addrs: []netip.Addr{netip.MustParseAddr("198.19.1.10")}},
			{Path: "/proc/7/ns/net", Ino: 2, Addrs: []netip.Addr{netip.MustParseAddr("198.19.1.11")}},
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	if res := e.Pass(t.Context()); res != (Result{}) || len(ag.calls) != 0 {
		t.Fatalf("pass before sync did %+v %v", res, ag.calls)
	}
	synced = true
	if res := e.Pass(t.Context()); res.Enrolled != 2 || res.Failed != 0 {
		t.Fatalf("pass = %+v", res)
	}
	// Register before rules, per pod.
	want := []string{"register enrolled-uid-a.eth0", "rules /run/netns/a", "register enrolled-uid-b.eth0", "rules /proc/7/ns/net"}
	if !slices.Equal(ag.calls, want) {
		t.Errorf("calls %v, want %v", ag.calls, want)
	}
	r := ag.regs["enrolled-uid-a.eth0"]
	if r.Namespace != "default" || r.Name != "a" || r.UID != "uid-a" || r.Netns != "/run/netns/a" {
		t.Errorf("registration %+v", r)
	}
	// Idempotent: nothing more to do.
	ag.calls = nil
	if res := e.Pass(t.Context()); res != (Result{}) || len(ag.calls) != 0 {
		t.Errorf("second pass did %+v %v", res, ag.calls)
	}
	// Pod b deleted: deregistered (its fake netns path has no addresses to
	// check, so no rule removal).
	pods = pods[:1]
	if res := e.Pass(t.Context()); res.Removed != 1 {
		t.Errorf("pass after delete = %+v", res)
	}
	if _, ok := ag.regs["enrolled-uid-b.eth0"]; ok {
		t.Error("deleted pod still registered")
	}
}

func TestPassRollbackAndMissingNetns(t *testing.T) {
	ag := &fakeAgent{regs: map[string]cniapi.PodStatus{}}
	rules := &fakeRules{a: ag, fail: errors.New("boom")}
	e, _ := New(Config{
		NodeName: node, Agent: ag, Rules: rules,
		Pods: func() ([]*corev1.Pod, bool) {
			return []*corev1.Pod{pod("a"), pod("nons", func(p *corev1.Pod) { p.Status.PodIP, p.Status.PodIPs = "198.19.1.50", nil })}, true
		},
		Netns: fakeNetns{
			{Path: "/run/netns/a", Ino: 1, Addrs: []netip.Addr{netip.MustParseAddr("198.19.1.10")}},
		},
	})
	res := e.Pass(t.Context())
	if res.Failed != 2 || res.Enrolled != 0 {
		t.Errorf("pass = %+v", res)
	}
	want := []string{"register enrolled-uid-a.eth0", "rules /run/netns/a", "deregister enrolled-uid-a.eth0"}
	if !slices.Equal(ag.calls, want) {
		t.Errorf("calls %v, want %v", ag.calls, want)
	}
	if len(ag.regs) != 0 {
		t.Errorf("left registered: %v", ag.regs)
	}
}

func TestFindAmbiguous(t *testing.T) {
	ip := netip.MustParseAddr("198.19.1.10")
	all := []Netns{{Path: "x", Addrs: []netip.Addr{ip}}, {Path: "y", Addrs: []netip.Addr{ip}}}
	if _, err := Find(all, []netip.Addr{ip}); err == nil {
		t.Error("ambiguous address found")
	}
	if n, err := Find(all[:1], []netip.Addr{ip}); err != nil || n.Path != "x" {
		t.Errorf("Find = %v, %v", n, err)
	}
}
