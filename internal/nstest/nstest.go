// Package nstest gives tests real network namespaces that clean up after
// themselves.
//
//	nstest.RequireRoot(t)
//	podNS := nstest.New(t) // removed when the test ends
//	err := podNS.Do(func(ns.NetNS) error { ... })
package nstest

import (
	"errors"
	"fmt"
	"os"
	"testing"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/containernetworking/plugins/pkg/testutils"
	"golang.org/x/sys/unix"

	"github.com/meshless/meshless/internal/testenv"
)

// RequireRoot ends t unless the test runs as root: it fails under
// CI=true, which runs as root and must run these tests, and skips
// otherwise (see testenv.Missing).
func RequireRoot(t testing.TB) {
	t.Helper()
	requireRoot(t, os.Geteuid())
}

func requireRoot(t testing.TB, euid int) {
	t.Helper()
	if euid != 0 {
		testenv.Missing(t, "root (the test makes network namespaces): run it as root, as CI does")
	}
}

// New makes a new, empty network namespace (bind-mounted under
// /run/netns/cnitest-<random>) and removes it when t ends, or earlier by
// Remove. Loopback is brought
// up, as a container runtime does.
func New(t testing.TB) ns.NetNS {
	t.Helper()
	n := NewBare(t)
	if err := n.Do(func(ns.NetNS) error { return linkUp("lo") }); err != nil {
		t.Fatalf("bring up lo in %s: %v", n.Path(), err)
	}
	return n
}

// Remove deletes n's bind mount, as a runtime does when a pod goes away.
// The unmount is lazy (MNT_DETACH, as containerd does) so that a daemon
// still holding the netns open does not make it fail; the namespace dies
// with its last handle. Removing twice is fine.
func Remove(n ns.NetNS) error {
	err := unix.Unmount(n.Path(), unix.MNT_DETACH)
	if err != nil && !errors.Is(err, unix.ENOENT) && !errors.Is(err, unix.EINVAL) {
		return fmt.Errorf("unmount %s: %w", n.Path(), err)
	}
	if err := os.Remove(n.Path()); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("remove %s: %w", n.Path(), err)
	}
	return nil
}

// NewBare is New without bringing loopback up: a netns as the kernel
// makes it, lo down and without its address, which is what a CNI plugin
// sees when the runtime has not run the loopback plugin yet.
func NewBare(t testing.TB) ns.NetNS {
	t.Helper()
	RequireRoot(t)
	n, err := testutils.NewNS()
	if err != nil {
		t.Fatalf("create netns: %v", err)
	}
	t.Cleanup(func() {
		n.Close()
		if err := Remove(n); err != nil {
			t.Errorf("remove netns: %v", err)
		}
	})
	return n
}
