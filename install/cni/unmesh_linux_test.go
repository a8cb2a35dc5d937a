package cni

import (
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"testing"

	"github.com/containernetworking/plugins/pkg/ns"
	"golang.org/x/sys/unix"

	"github.com/meshless/meshless/daemon/cniapi"
	"github.com/meshless/meshless/internal/nstest"
	"github.com/meshless/meshless/internal/podmesh"
	"github.com/meshless/meshless/internal/redirect"
)

// TestUnmeshPods: of two pod netns bound in a dir (as a runtime binds
// them in /var/run/netns), the meshed one loses every rule of ours and the
// other is left as it was.
func TestUnmeshPods(t *testing.T) {
	nstest.RequireRoot(t)
	dir := t.TempDir()
	bind := func(n ns.NetNS, name string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, nil, 0o444); err != nil {
			t.Fatal(err)
		}
		if err := unix.Mount(n.Path(), p, "", unix.MS_BIND, ""); err != nil {
			t.Fatalf("bind %s: %v", n.Path(), err)
		}
		t.Cleanup(func() { _ = unix.Unmount(p, unix.MNT_DETACH) })
		return p
	}
	meshed, plain := nstest.New(t), nstest.New(t)
	meshedPath, _ := bind(meshed, "cni-meshed"), bind(plain, "cni-plain")

	rules := podmesh.Redirect{Mode: redirect.ModeAuto}
	spec := redirect.SpecFor(&cniapi.Pod{IPs: []netip.Addr{netip.MustParseAddr("198.19.77.2")}})
	backend, err := rules.Apply(meshedPath, spec)
	if err != nil {
		t.Fatal(err)
	}
	b, err := redirect.New(redirect.Mode(backend))
	if err != nil {
		t.Fatal(err)
	}
	if err := meshed.Do(func(ns.NetNS) error { return b.Check(spec) }); err != nil {
		t.Fatalf("rules after Apply (%s): %v", backend, err)
	}

	n, err := UnmeshPods(dir, rules, slog.New(slog.DiscardHandler))
	if err != nil || n != 2 {
		t.Fatalf("UnmeshPods = %d, %v; want 2, nil", n, err)
	}
	if err := meshed.Do(func(ns.NetNS) error { return b.Check(spec) }); err == nil {
		t.Errorf("%s rules still in the meshed netns after UnmeshPods", backend)
	}
	if n, err := UnmeshPods(filepath.Join(dir, "missing"), rules, slog.New(slog.DiscardHandler)); err != nil || n != 0 {
		t.Errorf("UnmeshPods(missing dir) = %d, %v; want 0, nil", n, err)
	}
}
