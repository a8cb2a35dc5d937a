package lab

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/meshless/meshless/internal/nstest"
	"github.com/meshless/meshless/internal/testbins"
)

// freshRunEnv tells a child test process which test it runs inside its own
// mount namespace (see inFreshRun).
const freshRunEnv = "MESHLESS_LAB_FRESH_RUN"

// inFreshRun makes the calling test run in a child process that has its
// own mount namespace with an empty tmpfs on /run. There /run/netns starts
// as a plain directory, as on a host where neither `ip netns` nor the lab
// has run since boot, whatever this host's /run/netns looks like after
// earlier runs; and nothing the test mounts, hides or leaks reaches the
// host's /run/netns, where other labs and tests may be at work. It returns
// true in the child, which then runs the test's body; in the parent it
// runs the child, fails t if the child fails, and returns false.
func inFreshRun(t *testing.T) bool {
	t.Helper()
	if os.Getenv(freshRunEnv) == t.Name() {
		// Private first: with shared propagation (systemd's default for
		// /) the tmpfs below would appear in the host's namespace too.
		if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
			t.Fatalf("make / private: %v", err)
		}
		if err := unix.Mount("tmpfs", "/run", "tmpfs", 0, "mode=0755"); err != nil {
			t.Fatalf("mount tmpfs on /run: %v", err)
		}
		return true
	}
	nstest.RequireRoot(t)
	// Built once here rather than in every child.
	b := testbins.Get(t)
	pattern := "^" + strings.ReplaceAll(t.Name(), "/", "$/^") + "$"
	cmd := exec.Command(os.Args[0], "-test.run="+pattern, "-test.count=1", "-test.v")
	cmd.Env = append(os.Environ(), freshRunEnv+"="+t.Name(),
		"MESHLESS_BIN_DIR="+b.Dir, "MESHLESS_CNI_BIN_DIR="+b.RefDir)
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWNS}
	out, err := cmd.CombinedOutput()
	t.Logf("child in its own mount namespace:\n%s", out)
	if err != nil {
		t.Fatalf("child: %v", err)
	}
	if !strings.Contains(string(out), "--- PASS: "+t.Name()) {
		t.Fatalf("child did not run %s", t.Name())
	}
	return false
}

// ipNetnsAdd adds a netns with iproute2, as any other tool on the host may
// do while a lab is up, and deletes it when t ends.
func ipNetnsAdd(t *testing.T, name string) {
	t.Helper()
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add %s: %v: %s", name, err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("ip", "netns", "del", name).CombinedOutput(); err != nil {
			t.Errorf("ip netns del %s: %v: %s", name, err, out)
		}
	})
}

// plainNetns makes a netns the way a tool that skips the shared mount
// point does (and the lab did): a bind mount in /run/netns as it is.
func plainNetns(t *testing.T, name string) string {
	t.Helper()
	path := NetnsPath(name)
	if err := os.MkdirAll(NetnsDir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, nil, 0o444); err != nil {
		t.Fatal(err)
	}
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread dies in the new netns
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			errc <- err
			return
		}
		errc <- unix.Mount(fmt.Sprintf("/proc/self/task/%d/ns/net", unix.Gettid()), path, "none", unix.MS_BIND, "")
	}()
	if err := <-errc; err != nil {
		t.Fatalf("plain netns %s: %v", name, err)
	}
	return path
}

// netnsMounts lists the mount points under /run/netns/ in this mount
// namespace, hidden ones included: mountinfo lists a mount that another
// covers.
func netnsMounts(t *testing.T) []string {
	t.Helper()
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) > 4 && strings.HasPrefix(fields[4], NetnsDir+"/") {
			out = append(out, fields[4])
		}
	}
	return out
}

// downClean runs lab down and checks that it leaves nothing of the lab:
// no netns file, no mount (hidden or not), no daemon.
func downClean(t *testing.T, l *Lab) {
	t.Helper()
	pids := daemonPIDs(l)
	if err := Down(context.Background(), l.Name(), "", logWriter{t}); err != nil {
		t.Fatalf("lab down: %v", err)
	}
	assertGone(t, l.Name(), pids)
	for _, m := range netnsMounts(t) {
		if strings.HasPrefix(filepath.Base(m), l.Name()+"-") {
			t.Errorf("mount %s left", m)
		}
	}
}

// A tool that runs `ip netns add` (or the CNI testutils' NewNS) while a lab
// is up must not hide the lab's namespaces: lab down removes them all.
// Before the lab made /run/netns a shared mount point first, ip mounted the
// directory over itself, the lab's mounts stayed underneath, and lab down
// failed with "device or resource busy", leaking them.
func TestNetnsDirSharedMount(t *testing.T) {
	t.Run("ip netns add after up", func(t *testing.T) {
		if !inFreshRun(t) {
			return
		}
		l := upLab(t, "nsa", 1, 1)
		ipNetnsAdd(t, "other-nsa")
		downClean(t, l)
	})
	t.Run("cni testutils and ip around up", func(t *testing.T) {
		if !inFreshRun(t) {
			return
		}
		// nstest.New goes through testutils.NewNS, which shares
		// /var/run/netns (= /run/netns) itself; then the lab, then ip.
		before := nstest.New(t)
		l := upLab(t, "nsb", 1, 1)
		after := nstest.New(t)
		ipNetnsAdd(t, "other-nsb")
		downClean(t, l)
		for _, n := range []string{before.Path(), after.Path()} {
			if !netnsExists(filepath.Base(n)) {
				t.Errorf("%s gone or hidden after lab down", n)
			}
		}
	})
	t.Run("plain mounts before up", func(t *testing.T) {
		if !inFreshRun(t) {
			return
		}
		// A netns another tool mounted in the plain directory: making the
		// directory a mount point must not leave it pinned underneath.
		foreign := plainNetns(t, "foreign-nsc")
		l := upLab(t, "nsc", 1, 1)
		ipNetnsAdd(t, "other-nsc")
		if err := unix.Unmount(foreign, unix.MNT_DETACH); err != nil {
			t.Errorf("unmount %s: %v", foreign, err)
		}
		if err := os.Remove(foreign); err != nil {
			t.Errorf("remove %s (still mounted underneath?): %v", foreign, err)
		}
		downClean(t, l)
	})
	if t.Failed() {
		return
	}
	// Each child's mount namespace dies with it; nothing it made may be
	// left in the host's /run/netns.
	for _, prefix := range []string{"nsa", "nsb", "nsc"} {
		if left, err := labNetns(prefix); err != nil || len(left) > 0 {
			t.Errorf("host netns left: %v (%v)", left, err)
		}
	}
}
