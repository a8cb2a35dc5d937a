package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/meshless/meshless/internal/lab"
	"github.com/meshless/meshless/internal/nstest"
	"github.com/meshless/meshless/internal/redirect"
	"github.com/meshless/meshless/tests/harness"
)

// Bounds of the lab's lifecycle.
const (
	upTimeout   = 3 * time.Minute
	downTimeout = 2 * time.Minute
)

// upLab brings up a lab of two nodes with two pods each, from the
// binaries of this tree, and registers its teardown: when t ends, pass or
// fail, every process the suite started is stopped (see procs), the lab
// goes down, and t fails if any netns named after the lab, the lab's
// folder or a started process is left.
func upLab(t *testing.T) *lab.Lab {
	t.Helper()
	nstest.RequireRoot(t)
	bins := harness.Binaries(t)
	name := fmt.Sprintf("e2e%d", os.Getpid()%100000)
	// A lab of this name would be from an earlier run whose PID matched.
	if err := lab.Down(context.Background(), name, "", nil); err != nil {
		t.Fatalf("remove stale lab %s: %v", name, err)
	}
	// Registered first, so it runs last: after the processes and the lab
	// are gone.
	t.Cleanup(func() { checkNothingLeft(t, name) })
	ctx, cancel := context.WithTimeout(context.Background(), upTimeout)
	defer cancel()
	start := time.Now()
	// No KeepOnError: a failed Up removes what it made.
	l, err := lab.Up(ctx, lab.Options{Name: name, Nodes: 2, Pods: 2, BinDir: bins.Dir, CNIBinDir: bins.CNIDir})
	if err != nil {
		t.Fatalf("lab up: %v", err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			for _, n := range l.Nodes() {
				if b, err := os.ReadFile(n.Log); err == nil {
					t.Logf("meshlessd %s log (tail):\n%s", n.Name, harness.Tail(string(b), 30))
				}
			}
		}
		ctx, cancel := context.WithTimeout(context.Background(), downTimeout)
		defer cancel()
		start := time.Now()
		if err := l.Down(ctx); err != nil {
			t.Errorf("lab down: %v", err)
		}
		t.Logf("lab %s down in %s", name, time.Since(start).Round(time.Millisecond))
	})
	t.Logf("lab %s up in %s: %s", name, time.Since(start).Round(time.Millisecond), describePods(l))
	return l
}

func describePods(l *lab.Lab) string {
	var parts []string
	for _, p := range l.Pods() {
		parts = append(parts, p.Ref+"="+p.IP.String())
	}
	return strings.Join(parts, " ")
}

// checkNothingLeft fails t if the lab left a netns, its folder or a
// process the suite started, and removes what it finds.
func checkNothingLeft(t *testing.T, name string) {
	t.Helper()
	if ents, err := os.ReadDir(lab.NetnsDir); err == nil {
		var left []string
		for _, e := range ents {
			if strings.HasPrefix(e.Name(), name+"-") {
				left = append(left, e.Name())
			}
		}
		if len(left) > 0 {
			t.Errorf("netns left after lab down: %v", left)
			lab.Down(context.Background(), name, "", nil)
		}
	}
	if dir := filepath.Join(lab.DefaultRoot, name); fileExists(dir) {
		t.Errorf("lab folder %s left after lab down", dir)
		os.RemoveAll(dir)
	}
	if left := leftoverProcs(); len(left) > 0 {
		t.Errorf("processes the suite started are still running: %v", left)
		killLeftovers()
	}
}

func fileExists(p string) bool { _, err := os.Lstat(p); return err == nil }

// counters is every meshless_connections_total and meshless_bytes_total
// sample of every node, keyed "n1 <series>".
type counters map[string]float64

// readCounters reads the counters of every node's daemon.
func readCounters(t *testing.T, l *lab.Lab) counters {
	t.Helper()
	c := counters{}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, n := range l.Nodes() {
		body, err := n.Metrics(ctx)
		if err != nil {
			t.Fatalf("metrics of %s: %v", n.Name, err)
		}
		for _, line := range strings.Split(body, "\n") {
			if !strings.HasPrefix(line, "meshless_connections_total{") && !strings.HasPrefix(line, "meshless_bytes_total{") {
				continue
			}
			series, value, ok := strings.Cut(line, " ")
			if !ok {
				continue
			}
			var v float64
			if _, err := fmt.Sscan(value, &v); err != nil {
				t.Fatalf("metrics of %s: line %q: %v", n.Name, line, err)
			}
			c[n.Name+" "+series] = v
		}
	}
	return c
}

// sub returns the counters that changed from before to c.
func (c counters) sub(before counters) counters {
	d := counters{}
	for k, v := range c {
		if v != before[k] {
			d[k] = v - before[k]
		}
	}
	return d
}

func conns(node, dir, path string) string {
	return fmt.Sprintf(`%s meshless_connections_total{direction=%q,path=%q}`, node, dir, path)
}

func bytesSeries(node, dir string) string {
	return fmt.Sprintf(`%s meshless_bytes_total{direction=%q}`, node, dir)
}

// unmesh removes the Meshless rules from the pods' netns, as the plugin's
// CNI DEL does (the redirect package, auto mode, which cleans both
// backends), then checks with nft and iptables-save that none is left.
// The pods keep their addresses and routes: only the mesh is gone.
func unmesh(t *testing.T, l *lab.Lab, refs ...string) {
	t.Helper()
	// The host's view, taken on this thread (in the host netns), as the
	// plugin does before entering a pod.
	host, err := redirect.Detect()
	if err != nil {
		t.Fatalf("detect host rules: %v", err)
	}
	for _, ref := range refs {
		before := meshlessRules(t, l, ref)
		if len(before) == 0 {
			t.Fatalf("%s: no Meshless rules to remove: is the pod meshed at all?", ref)
		}
		err := l.InPod(ref, func() error {
			b, err := redirect.New(redirect.ModeAuto, redirect.WithHost(host))
			if err != nil {
				return err
			}
			return b.Remove()
		})
		if err != nil {
			t.Fatalf("remove Meshless rules in %s: %v", ref, err)
		}
		if after := meshlessRules(t, l, ref); len(after) > 0 {
			t.Fatalf("%s: Meshless rules left after Remove: %v", ref, after)
		}
		t.Logf("%s: removed %v", ref, before)
	}
}

// meshlessRules lists the Meshless rules the real tools see in the pod:
// the nftables table inet meshless, and MESHLESS_* chains of either
// iptables flavour.
func meshlessRules(t *testing.T, l *lab.Lab, ref string) []string {
	t.Helper()
	var found []string
	out, err := runIn(t, l, ref, 10*time.Second, "", "nft", "list", "tables")
	if err != nil {
		t.Fatalf("nft list tables in %s: %v", ref, err)
	}
	for _, line := range strings.Split(out, "\n") {
		if strings.TrimSpace(line) == "table inet meshless" {
			found = append(found, "nftables table inet meshless")
		}
	}
	for _, save := range []string{"iptables-nft-save", "iptables-legacy-save"} {
		if _, err := lookPath(save); err != nil {
			continue
		}
		out, err := runIn(t, l, ref, 10*time.Second, "", save)
		if err != nil {
			t.Fatalf("%s in %s: %v", save, ref, err)
		}
		for _, line := range strings.Split(out, "\n") {
			if strings.HasPrefix(line, ":MESHLESS_") {
				chain, _, _ := strings.Cut(line[1:], " ")
				found = append(found, save+" chain "+chain)
			}
		}
	}
	return found
}
