package redirect

import (
	"os"
	"strings"
	"testing"

	"github.com/meshless/meshless/internal/nstest"
)

// withoutBinaries runs f with a PATH where no iptables binary is found, as
// in the Meshless image the uninstall runs from.
func withoutBinaries(t *testing.T, f func() error) error {
	t.Helper()
	old := os.Getenv("PATH")
	os.Setenv("PATH", t.TempDir())
	defer os.Setenv("PATH", old)
	return f()
}

// TestRootIPTablesNFTRemoveWithoutBinary: rules written by iptables-nft
// (dual-stack, with exclusions) are removed through nf_tables netlink when
// no iptables binary exists: no chain, jump, ip rule or route of ours is
// left, foreign rules stay, Check fails. TestRootLifecycle is the same
// removal with the binary.
func TestRootIPTablesNFTRemoveWithoutBinary(t *testing.T) {
	nstest.RequireRoot(t)
	c := backendCases[0]
	if c.flavor != FlavorNFT {
		t.Fatalf("backendCases[0] is %s, want iptables-nft", c.name)
	}
	spec := goldenSpecs[1].spec
	n := nstest.New(t)
	b := c.new(t)
	c.foreign(t, n)
	if err := inNS(t, n, func() error { return b.Apply(spec) }); err != nil {
		t.Fatalf("Apply: %v", err)
	}
	if d := c.dump(t, n); !strings.Contains(d, "MESHLESS") {
		t.Fatalf("Apply wrote no chain of ours:\n%s", d)
	}
	// A fresh backend, as the uninstall has: nothing cached from Apply.
	rm := c.new(t)
	for i := range 2 {
		if err := withoutBinaries(t, func() error { return inNS(t, n, rm.Remove) }); err != nil {
			t.Fatalf("Remove #%d without iptables binaries: %v", i+1, err)
		}
	}
	if d := c.dump(t, n); strings.Contains(d, "MESHLESS") || strings.Contains(d, "proto 77") || strings.Contains(d, "19788") {
		t.Errorf("rules of ours left after Remove without the binary:\n%s", d)
	}
	if !c.foreignPresent(t, n) {
		t.Errorf("Remove deleted foreign rules:\n%s", c.dump(t, n))
	}
	if err := inNS(t, n, func() error { return b.Check(spec) }); err == nil {
		t.Error("Check passed after Remove")
	}
}

// TestRootIPTablesLegacyRemoveWithoutBinary: x_tables has no netlink
// interface, so without its binary Remove fails and names it, and the
// rules stay (nothing half-removed).
func TestRootIPTablesLegacyRemoveWithoutBinary(t *testing.T) {
	nstest.RequireRoot(t)
	c := backendCases[1]
	if c.flavor != FlavorLegacy {
		t.Fatalf("backendCases[1] is %s, want iptables-legacy", c.name)
	}
	spec := goldenSpecs[1].spec
	n := nstest.New(t)
	b := c.new(t)
	if err := inNS(t, n, func() error { return b.Apply(spec) }); err != nil {
		t.Fatalf("Apply: %v", err)
	}
	err := withoutBinaries(t, func() error { return inNS(t, n, b.Remove) })
	if err == nil || !strings.Contains(err.Error(), "iptables") {
		t.Fatalf("Remove without iptables-legacy = %v, want an error naming the binary", err)
	}
	if err := inNS(t, n, func() error { return b.Check(spec) }); err != nil {
		t.Errorf("the rules changed after a failed Remove: %v", err)
	}
	if err := inNS(t, n, b.Remove); err != nil {
		t.Fatalf("Remove with the binary: %v", err)
	}
}
