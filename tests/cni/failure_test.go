package cni_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/meshless/meshless/tests/harness"
)

// TestDaemonDown: ADD fails with code 11 so the runtime retries, and the
// pod netns stays exactly as the primary plugin made it.
func TestDaemonDown(t *testing.T) {
	for _, v := range cniVersions {
		t.Run(v, func(t *testing.T) {
			l := newLab(t, false)
			primaryOnly := harness.NewChain(t, l.bins, l.node, harness.ChainOptions{
				CNIVersion: v, Bridge: "mlt0", Subnet: "198.19.1.0/24", StateDir: t.TempDir(),
			})
			ref := l.pod()
			if _, err := primaryOnly.Add(ref); err != nil {
				t.Fatalf("ADD with the primary plugin only: %v", err)
			}
			want := rules(t, ref.Netns)

			p := l.pod()
			_, err := l.chain(v, nil).Add(p)
			if code := harness.CNIErrorCode(err); code != 11 {
				t.Fatalf("ADD with daemon down: code %d (%v), want 11", code, err)
			}
			if got := rules(t, p.Netns); got != want {
				t.Errorf("pod netns differs from a primary-only pod:\n got:\n%s\nwant:\n%s", got, want)
			}
		})
	}
}

// TestFailOpen: with failOpen an unreachable daemon gives a successful ADD,
// no redirection, and a warning in the log.
func TestFailOpen(t *testing.T) {
	l := newLab(t, false)
	p := l.pod()
	if _, err := l.chain("1.0.0", map[string]any{"failOpen": true}).Add(p); err != nil {
		t.Fatalf("ADD with failOpen and daemon down: %v", err)
	}
	if r := rules(t, p.Netns); hasMeshlessRules(r) {
		t.Errorf("failOpen ADD wrote rules:\n%s", r)
	}
	log, _ := os.ReadFile(filepath.Join(l.dir, "cni.log"))
	if !strings.Contains(string(log), "WITHOUT the mesh") {
		t.Errorf("no failOpen warning in log:\n%s", log)
	}
}

// TestMalformedConfig: bad conf keys give code 6 or 7 naming the field, and
// touch nothing.
func TestMalformedConfig(t *testing.T) {
	l := newLab(t, true)
	tests := []struct {
		extra map[string]any
		code  int
		field string
	}{
		{map[string]any{"failOpen": "yes"}, 6, "failOpen"},
		{map[string]any{"redirect": "ebpf"}, 7, "redirect"},
		{map[string]any{"excludeInboundPorts": []int{70000}}, 7, "excludeInboundPorts"},
		{map[string]any{"excludeOutboundCIDRs": []string{"198.18.0.0/99"}}, 7, "excludeOutboundCIDRs"},
		{map[string]any{"excludeNamespaces": "kube-system"}, 6, "excludeNamespaces"},
	}
	for _, tt := range tests {
		t.Run(tt.field, func(t *testing.T) {
			p := l.pod()
			_, err := l.chain("1.0.0", tt.extra).Add(p)
			if code := harness.CNIErrorCode(err); code != tt.code || !strings.Contains(err.Error(), tt.field) {
				t.Fatalf("code %d, err %v; want code %d naming %q", code, err, tt.code, tt.field)
			}
			if r := rules(t, p.Netns); hasMeshlessRules(r) {
				t.Errorf("rules written despite a bad config")
			}
			if l.registered(p) {
				t.Errorf("pod registered despite a bad config")
			}
		})
	}
}

// TestDelIdempotent: DEL succeeds with the daemon down (and the daemon
// applies the missed deregistration when it is back), and with the netns
// already gone.
func TestDelIdempotent(t *testing.T) {
	l := newLab(t, true)
	chain := l.chain("1.0.0", nil)
	a, b := l.pod(), l.pod()
	for _, p := range []harness.Pod{a, b} {
		if _, err := chain.Add(p); err != nil {
			t.Fatalf("ADD: %v", err)
		}
	}

	l.daemon.Stop()
	if err := chain.Del(a); err != nil {
		t.Fatalf("DEL with daemon down: %v", err)
	}
	if r := rules(t, a.Netns); hasMeshlessRules(r) {
		t.Errorf("rules left after DEL with daemon down:\n%s", r)
	}
	if err := chain.Del(a); err != nil {
		t.Fatalf("second DEL with daemon down: %v", err)
	}
	l.startDaemon()
	if l.registered(a) {
		t.Errorf("deregistration made while the daemon was down was lost")
	}
	if !l.registered(b) {
		t.Errorf("restart lost the registration of a live pod")
	}

	// The runtime deleted the netns before DEL.
	if out, err := exec.Command("ip", "netns", "delete", filepath.Base(b.Netns)).CombinedOutput(); err != nil {
		t.Fatalf("delete netns: %v %s", err, out)
	}
	if err := chain.Del(b); err != nil {
		t.Fatalf("DEL with the netns gone: %v", err)
	}
	if l.registered(b) {
		t.Errorf("pod still registered after DEL with the netns gone")
	}
}

// TestCheckDetectsDrift: CHECK fails when a rule or the registration is
// missing.
func TestCheckDetectsDrift(t *testing.T) {
	for _, mode := range []string{"iptables", "nftables"} {
		t.Run(mode, func(t *testing.T) {
			l := newLab(t, true)
			chain := l.chain("1.0.0", map[string]any{"redirect": mode})
			p := l.pod()
			if _, err := chain.Add(p); err != nil {
				t.Fatalf("ADD: %v", err)
			}
			if err := chain.Check(p); err != nil {
				t.Fatalf("CHECK on a fresh pod: %v", err)
			}
			var tamper []string
			if mode == "iptables" {
				tamper = []string{"iptables", "-t", "nat", "-F", "MESHLESS_OUTPUT"}
			} else {
				tamper = []string{"nft", "flush", "chain", "inet", "meshless", "output"}
			}
			args := append([]string{"netns", "exec", filepath.Base(p.Netns)}, tamper...)
			if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
				t.Fatalf("%v: %v %s", tamper, err, out)
			}
			if err := chain.Check(p); err == nil {
				t.Errorf("CHECK passed with the outbound rules flushed")
			}

			q := l.pod()
			if _, err := chain.Add(q); err != nil {
				t.Fatalf("ADD: %v", err)
			}
			if err := l.client().Deregister(t.Context(), attachment(q)); err != nil {
				t.Fatal(err)
			}
			if err := chain.Check(q); err == nil || !strings.Contains(err.Error(), "not registered") {
				t.Errorf("CHECK with the registration gone: %v", err)
			}
		})
	}
}
