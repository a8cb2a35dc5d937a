package cni_test

import (
	"net/netip"
	"testing"

	"github.com/meshless/meshless/daemon/cniapi"
	"github.com/meshless/meshless/tests/harness"
)

func attachment(p harness.Pod) cniapi.Attachment {
	return cniapi.Attachment{ContainerID: p.ContainerID, IfName: "eth0"}
}

// TestStatus: STATUS fails with code 50 while the daemon is down and
// passes once it is ready.
func TestStatus(t *testing.T) {
	l := newLab(t, false)
	chain := l.chain("1.1.0", nil)
	if code := harness.CNIErrorCode(chain.Status()); code != 50 {
		t.Fatalf("STATUS with daemon down: code %d, want 50", code)
	}
	l.startDaemon()
	if err := chain.Status(); err != nil {
		t.Fatalf("STATUS with daemon ready: %v", err)
	}
}

// TestGC: GC deregisters every attachment that is not valid.
func TestGC(t *testing.T) {
	l := newLab(t, true)
	chain := l.chain("1.1.0", nil)
	keep, drop := l.pod(), l.pod()
	for _, p := range []harness.Pod{keep, drop} {
		if _, err := chain.Add(p); err != nil {
			t.Fatalf("ADD: %v", err)
		}
	}
	// A registration the runtime's cache does not know about (a crashed
	// runtime lost it): libcni's GC will not DEL it, only the plugin's GC
	// can remove it.
	stray := l.pod()
	if _, err := l.client().Register(t.Context(), &cniapi.Pod{
		Attachment: attachment(stray), Netns: stray.Netns, IPs: []netip.Addr{netip.MustParseAddr("198.19.1.250")},
	}); err != nil {
		t.Fatalf("register stray: %v", err)
	}
	if err := chain.GC(keep); err != nil {
		t.Fatalf("GC: %v", err)
	}
	if !l.registered(keep) {
		t.Errorf("GC removed a valid attachment")
	}
	if l.registered(drop) {
		t.Errorf("GC kept an attachment that is not valid")
	}
	if l.registered(stray) {
		t.Errorf("GC kept a registration unknown to the runtime")
	}
}

// TestExclusions: pods of excluded namespaces and pods that opt out by
// annotation get no rules and no registration; annotation exclusions reach
// the daemon.
func TestExclusions(t *testing.T) {
	l := newLab(t, true)
	chain := l.chain("1.0.0", nil)

	sys := l.pod()
	sys.Namespace = "kube-system"
	out := l.pod()
	out.Annotations = map[string]string{"meshless.io/mesh": "disabled"}
	for _, p := range []harness.Pod{sys, out} {
		if _, err := chain.Add(p); err != nil {
			t.Fatalf("ADD %s: %v", p.Name, err)
		}
		if r := rules(t, p.Netns); hasMeshlessRules(r) {
			t.Errorf("%s/%s got rules:\n%s", p.Namespace, p.Name, r)
		}
		if l.registered(p) {
			t.Errorf("%s/%s registered", p.Namespace, p.Name)
		}
	}

	ex := l.pod()
	ex.Annotations = map[string]string{"meshless.io/exclude-outbound-ports": "5432"}
	if _, err := chain.Add(ex); err != nil {
		t.Fatalf("ADD: %v", err)
	}
	st, err := l.client().Get(t.Context(), attachment(ex))
	if err != nil {
		t.Fatal(err)
	}
	if len(st.Exclusions.OutboundPorts) != 1 || st.Exclusions.OutboundPorts[0] != 5432 {
		t.Errorf("registration exclusions = %+v, want outbound port 5432", st.Exclusions)
	}
	if r := rules(t, ex.Netns); !containsPort(r, "5432") {
		t.Errorf("rules do not exclude port 5432:\n%s", r)
	}
}
