package enroll

import (
	"net/netip"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"

	"github.com/meshless/meshless/daemon/cniapi"
	"github.com/meshless/meshless/internal/nstest"
	"github.com/meshless/meshless/internal/podmesh"
	"github.com/meshless/meshless/internal/redirect"
)

// TestFinderRoot stands a netns with an address and a process in it in for
// a running pod, and finds it by address: through /proc alone, and through
// the bind mount when there is one; then writes and removes the plugin's
// rules there.
func TestFinderRoot(t *testing.T) {
	nstest.RequireRoot(t)
	n := nstest.New(t)
	name := filepath.Base(n.Path())
	ip := netip.MustParseAddr("198.19.251.77")
	for _, args := range [][]string{
		{"-n", name, "link", "add", "eth0", "type", "veth", "peer", "name", "eth0-peer"},
		{"-n", name, "addr", "add", ip.String() + "/24", "dev", "eth0"},
		{"-n", name, "link", "set", "eth0", "up"},
		{"-n", name, "link", "set", "eth0-peer", "up"},
	} {
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			t.Fatalf("ip %v: %v\n%s", args, err, out)
		}
	}
	sleep := exec.Command("ip", "netns", "exec", name, "sleep", "300")
	if err := sleep.Start(); err != nil {
		t.Fatal(err)
	}
	pid := sleep.Process.Pid
	t.Cleanup(func() {
		sleep.Process.Kill()
		sleep.Wait()
	})
	want, ok := nsIno(n.Path())
	if !ok {
		t.Fatal("no inode for", n.Path())
	}
	// Wait until `ip netns exec` has entered the netns and exec'd sleep.
	procPath := "/proc/" + strconv.Itoa(pid) + "/ns/net"
	deadline := time.Now().Add(5 * time.Second)
	for {
		if ino, _ := nsIno(procPath); ino == want {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("process %d never entered %s", pid, n.Path())
		}
		time.Sleep(10 * time.Millisecond)
	}

	node := (&Finder{}).NodeNetns()
	check := func(f *Finder, wantPath func(string) bool) Netns {
		t.Helper()
		all, err := f.List()
		if err != nil {
			t.Fatal(err)
		}
		for _, x := range all {
			if node[x.Ino] {
				t.Errorf("the node's own netns %s (inode %d) is a candidate", x.Path, x.Ino)
			}
		}
		got, err := Find(all, []netip.Addr{ip})
		if err != nil {
			t.Fatal(err)
		}
		if got.Ino != want || !wantPath(got.Path) {
			t.Fatalf("found %s (inode %d), want inode %d", got.Path, got.Ino, want)
		}
		t.Logf("found %s by address %s among %d netns", got.Path, ip, len(all))
		return got
	}
	// /proc only: a process in the netns.
	check(&Finder{NetnsDirs: []string{}}, func(p string) bool { return strings.HasPrefix(p, "/proc/") && strings.HasSuffix(p, "/ns/net") })
	// With the bind mounts: the stable path wins.
	got := check(&Finder{}, func(p string) bool { return filepath.Base(p) == name })

	// The plugin's rules, written and removed through the found path.
	rules := podmesh.Redirect{Mode: redirect.ModeAuto}
	spec := redirect.SpecFor(&cniapi.Pod{IPs: []netip.Addr{ip}})
	backend, err := rules.Apply(got.Path, spec)
	if err != nil {
		t.Fatal(err)
	}
	b, err := redirect.New(redirect.Mode(backend))
	if err != nil {
		t.Fatal(err)
	}
	if err := n.Do(func(ns.NetNS) error { return b.Check(spec) }); err != nil {
		t.Errorf("rules after Apply (%s): %v", backend, err)
	}
	if err := rules.Remove(got.Path); err != nil {
		t.Fatal(err)
	}
	if err := n.Do(func(ns.NetNS) error { return b.Check(spec) }); err == nil {
		t.Error("rules still there after Remove")
	}
	// Once the process is gone, /proc no longer finds it.
	sleep.Process.Kill()
	sleep.Wait()
	all, err := (&Finder{NetnsDirs: []string{}}).List()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Find(all, []netip.Addr{ip}); err == nil {
		t.Error("netns found through /proc after its only process exited")
	}
}
