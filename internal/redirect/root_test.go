package redirect

import (
	"regexp"
	"strings"
	"testing"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/meshless/meshless/internal/nstest"
)

// TestRootGoldenListing applies every golden spec in turn in one netns (so
// each apply also replaces a different earlier spec) and compares what the
// kernel lists with the same golden files the rendering test uses.
func TestRootGoldenListing(t *testing.T) {
	nstest.RequireRoot(t)
	for _, c := range backendCases {
		t.Run(c.name, func(t *testing.T) {
			n := nstest.New(t)
			b := c.new(t)
			for _, g := range goldenSpecs {
				if err := inNS(t, n, func() error { return b.Apply(g.spec) }); err != nil {
					t.Fatalf("%s: Apply: %v", g.name, err)
				}
				compareGolden(t, goldenPath(c.mode, g.name), c.ours(t, n, g.spec))
				compareGolden(t, goldenPath(routesGolden, g.name), ourRoutes(t, n, g.spec))
				if err := inNS(t, n, func() error { return b.Check(g.spec) }); err != nil {
					t.Errorf("%s: Check after Apply: %v", g.name, err)
				}
			}
		})
	}
}

// foreign adds rules that are not ours, which Apply and Remove must keep:
// of the backend's kind, and an ip rule and route of both families much
// like ours (another mark, another table).
func (c backendCase) foreign(t *testing.T, n ns.NetNS) {
	t.Helper()
	for _, fam := range []string{"-4", "-6"} {
		sh(t, n, "ip", fam, "rule", "add", "pref", "100", "fwmark", "0x20000/0x20000", "lookup", "300")
		def := map[string]string{"-4": "0.0.0.0/0", "-6": "::/0"}[fam]
		sh(t, n, "ip", fam, "route", "add", "local", def, "dev", "lo", "table", "300")
	}
	if c.mode == ModeNFTables {
		sh(t, n, "nft", "add table inet other; add chain inet other out { type nat hook output priority 0; }; add rule inet other out udp dport 53 accept")
		return
	}
	for _, v6 := range []bool{false, true} {
		sh(t, n, c.bin(v6, ""), "-t", "nat", "-A", "OUTPUT", "-p", "udp", "-j", "ACCEPT")
	}
}

func (c backendCase) foreignPresent(t *testing.T, n ns.NetNS) bool {
	t.Helper()
	d := c.dump(t, n)
	if strings.Count(d, "fwmark 0x20000/0x20000 lookup 300") != 2 || strings.Count(d, "local default dev lo table 300") != 2 {
		return false
	}
	if c.mode == ModeNFTables {
		return strings.Contains(d, "table inet other") && strings.Contains(d, "udp dport 53 accept")
	}
	return strings.Count(d, "-A OUTPUT -p udp -j ACCEPT") == 2
}

// tamper deletes our outbound redirect rule and returns what Check must
// say about it.
func (c backendCase) tamper(t *testing.T, n ns.NetNS) string {
	t.Helper()
	if c.mode == ModeNFTables {
		out := sh(t, n, "nft", "-a", "list", "chain", "inet", "meshless", "output")
		m := regexp.MustCompile(`redirect to :15001 # handle (\d+)`).FindStringSubmatch(out)
		if m == nil {
			t.Fatalf("no redirect rule in\n%s", out)
		}
		sh(t, n, "nft", "delete", "rule", "inet", "meshless", "output", "handle", m[1])
		return `nftables: rule "meta l4proto tcp redirect to :15001" missing in chain inet meshless output`
	}
	sh(t, n, c.bin(false, ""), "-t", "nat", "-D", chainOut, "-p", "tcp", "-j", "REDIRECT", "--to-ports", "15001")
	return `iptables: rule "-p tcp -j REDIRECT --to-ports 15001" missing in nat/MESHLESS_OUTPUT`
}

// addStray adds a rule of someone else into our outbound chain.
func (c backendCase) addStray(t *testing.T, n ns.NetNS) string {
	t.Helper()
	if c.mode == ModeNFTables {
		sh(t, n, "nft", "add", "rule", "inet", "meshless", "output", "tcp", "dport", "7", "return")
		return "unexpected rule"
	}
	sh(t, n, c.bin(true, ""), "-t", "nat", "-I", chainOut, "-p", "tcp", "-m", "tcp", "--dport", "7", "-j", "RETURN")
	return `ip6tables: unexpected rule "-p tcp -m tcp --dport 7 -j RETURN" in nat/MESHLESS_OUTPUT`
}

func TestRootLifecycle(t *testing.T) {
	nstest.RequireRoot(t)
	spec := goldenSpecs[1].spec // exclusions, dual-stack
	for _, c := range backendCases {
		t.Run(c.name, func(t *testing.T) {
			n := nstest.New(t)
			b := c.new(t)
			do := func(f func() error) error { return inNS(t, n, f) }
			c.foreign(t, n)

			if err := do(func() error { return b.Check(spec) }); err == nil {
				t.Fatal("Check passed before Apply")
			}
			if err := do(func() error { return b.Apply(spec) }); err != nil {
				t.Fatalf("Apply: %v", err)
			}
			first := c.dump(t, n)
			if err := do(func() error { return b.Apply(spec) }); err != nil {
				t.Fatalf("second Apply: %v", err)
			}
			if second := c.dump(t, n); second != first {
				t.Errorf("second Apply changed the rules:\n--- first\n%s\n--- second\n%s", first, second)
			}
			if err := do(func() error { return b.Check(spec) }); err != nil {
				t.Errorf("Check after Apply: %v", err)
			}
			if !c.foreignPresent(t, n) {
				t.Errorf("Apply lost the foreign rules:\n%s", c.dump(t, n))
			}

			// A spec that differs must fail Check.
			other := spec
			other.ExcludeInboundPorts = []uint16{1234}
			if err := do(func() error { return b.Check(other) }); err == nil || !strings.Contains(err.Error(), "1234") {
				t.Errorf("Check(other spec) = %v, want an error naming port 1234", err)
			}

			want := c.tamper(t, n)
			err := do(func() error { return b.Check(spec) })
			if err == nil || err.Error() != want {
				t.Errorf("Check after tamper = %v, want %q", err, want)
			}
			if err := do(func() error { return b.Apply(spec) }); err != nil {
				t.Fatalf("repairing Apply: %v", err)
			}
			if err := do(func() error { return b.Check(spec) }); err != nil {
				t.Errorf("Check after repair: %v", err)
			}
			// The routing half: a missing route is named, and repaired.
			sh(t, n, "ip", "-6", "route", "del", "local", "::/0", "dev", "lo", "table", "19788")
			err = do(func() error { return b.Check(spec) })
			if want := `routing: "ip -6 route local ::/0 dev lo table 19788" missing`; err == nil || err.Error() != want {
				t.Errorf("Check without our route = %v, want %q", err, want)
			}
			if err := do(func() error { return b.Apply(spec) }); err != nil {
				t.Fatalf("repairing Apply: %v", err)
			}
			if err := do(func() error { return b.Check(spec) }); err != nil {
				t.Errorf("Check after route repair: %v", err)
			}

			want = c.addStray(t, n)
			if err := do(func() error { return b.Check(spec) }); err == nil || !strings.Contains(err.Error(), want) {
				t.Errorf("Check with a stray rule = %v, want %q", err, want)
			}

			for i := range 2 {
				if err := do(b.Remove); err != nil {
					t.Fatalf("Remove #%d: %v", i+1, err)
				}
			}
			if d := c.dump(t, n); strings.Contains(d, "MESHLESS") || strings.Contains(d, "meshless") ||
				strings.Contains(d, "proto 77") || strings.Contains(d, "19788") {
				t.Errorf("rules of ours left after Remove:\n%s", d)
			}
			if !c.foreignPresent(t, n) {
				t.Errorf("Remove deleted foreign rules:\n%s", c.dump(t, n))
			}
			if err := do(func() error { return b.Check(spec) }); err == nil {
				t.Error("Check passed after Remove")
			}
		})
	}
}

// TestRootRemoveClean: Remove in a netns where nothing was ever applied
// succeeds for every backend, Check fails, and neither loads a table (a legacy nat table would
// flip later auto detection to iptables-legacy).
func TestRootRemoveClean(t *testing.T) {
	nstest.RequireRoot(t)
	for _, c := range append(backendCases, backendCase{"auto", ModeAuto, ""}) {
		t.Run(c.name, func(t *testing.T) {
			n := nstest.New(t)
			b := c.new(t)
			if err := inNS(t, n, b.Remove); err != nil {
				t.Fatalf("Remove: %v", err)
			}
			if err := inNS(t, n, func() error { return b.Check(Spec{IPv4: true, IPv6: true}) }); err == nil {
				t.Error("Check passed in an empty netns")
			}
			var d Detection
			if err := inNS(t, n, func() (err error) { d, err = Detect(); return err }); err != nil {
				t.Fatal(err)
			}
			if d != (Detection{}) {
				t.Errorf("Remove left tables behind: %s", d)
			}
		})
	}
}

// TestRootIPTablesApplyFailureCleansUp: when the IPv6 half fails, the IPv4
// half already written is removed again.
func TestRootIPTablesApplyFailureCleansUp(t *testing.T) {
	n := nstest.New(t)
	b, err := New(ModeIPTables, WithHost(Detection{}), WithIPTablesFlavor(FlavorNFT),
		WithIPTablesPaths("iptables-nft", "/bin/false"))
	if err != nil {
		t.Fatal(err)
	}
	err = inNS(t, n, func() error { return b.Apply(Spec{IPv4: true, IPv6: true}) })
	if err == nil || !strings.Contains(err.Error(), "ip6tables") {
		t.Fatalf("Apply = %v, want an ip6tables error", err)
	}
	if out := sh(t, n, "iptables-nft-save"); strings.Contains(out, "MESHLESS") {
		t.Errorf("failed Apply left rules:\n%s", out)
	}
	if out := routingDump(t, n); strings.Contains(out, "proto 77") {
		t.Errorf("failed Apply left ip rules or routes:\n%s", out)
	}
}

// TestRootAutoDetect: auto picks iptables (of the flavor in use) when the
// pod or host has iptables tables, else nftables; and Detect looks at the
// calling thread's netns, not the process's.
func TestRootAutoDetect(t *testing.T) {
	nstest.RequireRoot(t)
	tests := []struct {
		name     string
		host     Detection
		prepare  []string // a command run in the pod netns first
		wantName string
		listing  []string // shows our rules
	}{
		{"clean", Detection{}, nil, "nftables", []string{"nft", "list", "ruleset"}},
		{"legacy tables in pod", Detection{}, []string{"iptables-legacy", "-t", "nat", "-L", "-n"}, "iptables", []string{"iptables-legacy-save", "-t", "nat"}},
		{"iptables-nft tables in pod", Detection{}, []string{"iptables-nft", "-t", "filter", "-A", "INPUT", "-p", "udp", "-j", "ACCEPT"}, "iptables", []string{"iptables-nft-save", "-t", "nat"}},
		{"host legacy", Detection{Legacy: true}, nil, "iptables", []string{"iptables-legacy-save", "-t", "nat"}},
		{"host iptables-nft", Detection{IPTablesNFT: true}, nil, "iptables", []string{"iptables-nft-save", "-t", "nat"}},
	}
	spec := Spec{IPv4: true}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n := nstest.New(t)
			if tt.prepare != nil {
				sh(t, n, tt.prepare[0], tt.prepare[1:]...)
			}
			b, err := New(ModeAuto, WithHost(tt.host))
			if err != nil {
				t.Fatal(err)
			}
			if err := inNS(t, n, func() error { return b.Apply(spec) }); err != nil {
				t.Fatalf("Apply: %v", err)
			}
			if b.Name() != tt.wantName {
				t.Errorf("Name() = %q, want %q", b.Name(), tt.wantName)
			}
			if out := sh(t, n, tt.listing[0], tt.listing[1:]...); !strings.Contains(strings.ToLower(out), "meshless") {
				t.Errorf("%v shows no rules of ours:\n%s", tt.listing, out)
			}
			if err := inNS(t, n, func() error { return b.Check(spec) }); err != nil {
				t.Errorf("Check: %v", err)
			}
			if err := inNS(t, n, b.Remove); err != nil {
				t.Fatalf("Remove: %v", err)
			}
			if out := sh(t, n, tt.listing[0], tt.listing[1:]...); strings.Contains(strings.ToLower(out), "meshless") {
				t.Errorf("rules left after Remove:\n%s", out)
			}
		})
	}
}

func TestRootDetect(t *testing.T) {
	nstest.RequireRoot(t)
	n := nstest.New(t)
	detect := func() Detection {
		t.Helper()
		var d Detection
		if err := inNS(t, n, func() (err error) { d, err = Detect(); return err }); err != nil {
			t.Fatal(err)
		}
		return d
	}
	if d := detect(); d != (Detection{}) {
		t.Fatalf("fresh netns: Detect() = %s, want none", d)
	}
	sh(t, n, "ip6tables-legacy", "-t", "mangle", "-L", "-n")
	if d := detect(); !d.Legacy || d.IPTablesNFT {
		t.Errorf("after ip6tables-legacy: Detect() = %s", d)
	}
	sh(t, n, "iptables-nft", "-t", "raw", "-A", "OUTPUT", "-p", "udp", "-j", "ACCEPT")
	if d := detect(); !d.Legacy || !d.IPTablesNFT || d.Meshless {
		t.Errorf("after iptables-nft: Detect() = %s", d)
	}
	if err := inNS(t, n, func() error { return nftBackend{}.Apply(Spec{IPv4: true}) }); err != nil {
		t.Fatal(err)
	}
	if d := detect(); !d.Meshless {
		t.Errorf("after nftables Apply: Detect() = %s", d)
	}
}
