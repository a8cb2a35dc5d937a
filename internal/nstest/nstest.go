// Package nstest gives tests real network namespaces that clean up after
// themselves.
//
//	nstest.RequireRoot(t)
//	podNS := nstest.New(t) // removed when the test ends
//	err := podNS.Do(func(ns.NetNS) error { ... })
package nstest

import (
	"os"
	"testing"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/containernetworking/plugins/pkg/testutils"
)

// RequireRoot skips t, saying why, when the test does not run as root. CI
// runs as root, so these tests run there.
func RequireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("skipped: needs root (network namespaces); CI runs it as root")
	}
}

// New makes a new, empty network namespace (bind-mounted under
// /run/netns/cni-<random>) and removes it when t ends. Loopback is brought
// up, as a container runtime does.
func New(t testing.TB) ns.NetNS {
	t.Helper()
	RequireRoot(t)
	n, err := testutils.NewNS()
	if err != nil {
		t.Fatalf("create netns: %v", err)
	}
	t.Cleanup(func() {
		n.Close()
		if err := testutils.UnmountNS(n); err != nil {
			t.Errorf("remove netns %s: %v", n.Path(), err)
		}
	})
	if err := n.Do(func(ns.NetNS) error { return linkUp("lo") }); err != nil {
		t.Fatalf("bring up lo in %s: %v", n.Path(), err)
	}
	return n
}
