package lab

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"sort"

	"github.com/containernetworking/plugins/pkg/ns"
	"golang.org/x/sys/unix"
)

// NetnsDir is where named network namespaces are bind-mounted, as by
// `ip netns add`.
const NetnsDir = "/run/netns"

// NetnsPath returns the bind-mount path of the named netns.
func NetnsPath(name string) string { return filepath.Join(NetnsDir, name) }

// createNetns makes a new network namespace bind-mounted at
// /run/netns/<name>, like `ip netns add`, with loopback down (the CNI
// loopback plugin or the caller brings it up). The namespace is made on a
// locked thread that is thrown away afterwards, so no thread of this
// process is left in it.
func createNetns(name string) error {
	if err := shareNetnsDir(); err != nil {
		return err
	}
	path := NetnsPath(name)
	f, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_RDONLY, 0o444)
	if err != nil {
		return fmt.Errorf("create netns %s: %w", name, err)
	}
	f.Close()
	errc := make(chan error, 1)
	go func() {
		// Never unlocked: the thread, now in the new netns, exits with
		// the goroutine instead of returning to the scheduler.
		runtime.LockOSThread()
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("unshare: %w", err)
			return
		}
		src := fmt.Sprintf("/proc/self/task/%d/ns/net", unix.Gettid())
		if err := unix.Mount(src, path, "none", unix.MS_BIND, ""); err != nil {
			errc <- fmt.Errorf("bind mount: %w", err)
			return
		}
		errc <- nil
	}()
	if err := <-errc; err != nil {
		os.Remove(path)
		return fmt.Errorf("create netns %s: %w", name, err)
	}
	return nil
}

// shareNetnsDir makes NetnsDir a shared mount point before anything is
// mounted in it, as `ip netns add` and the CNI testutils' NewNS do. Each of
// them, finding a plain directory, bind-mounts it over itself: done after
// the lab's mounts, that would leave them underneath, hidden, and their
// files busy, so lab down could neither see nor remove them. Shared, the
// mounts also propagate to mount namespaces made from this one (a
// container runtime's), so one unmount frees a namespace everywhere.
func shareNetnsDir() error {
	if err := os.MkdirAll(NetnsDir, 0o755); err != nil {
		return fmt.Errorf("create %s: %w", NetnsDir, err)
	}
	err := unix.Mount("", NetnsDir, "none", unix.MS_SHARED|unix.MS_REC, "")
	if err == nil {
		return nil
	}
	// EINVAL: not a mount point yet (the first of us since boot).
	if !errors.Is(err, unix.EINVAL) {
		return fmt.Errorf("make %s shared: %w", NetnsDir, err)
	}
	return upgradeNetnsDir()
}

// upgradeNetnsDir bind-mounts the plain NetnsDir over itself and makes the
// new mount point shared. The bind is recursive so that netns other tools
// already mounted there stay visible; their originals, now covered, would
// keep each file busy, so they are detached through a handle on the
// directory taken before it was covered.
func upgradeNetnsDir() error {
	under, err := unix.Open(NetnsDir, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open %s: %w", NetnsDir, err)
	}
	defer unix.Close(under)
	if err := unix.Mount(NetnsDir, NetnsDir, "none", unix.MS_BIND|unix.MS_REC, ""); err != nil {
		return fmt.Errorf("bind-mount %s on itself: %w", NetnsDir, err)
	}
	if err := unix.Mount("", NetnsDir, "none", unix.MS_SHARED|unix.MS_REC, ""); err != nil {
		return fmt.Errorf("make %s shared: %w", NetnsDir, err)
	}
	return detachCovered(fmt.Sprintf("/proc/self/fd/%d", under))
}

// detachCovered lazily unmounts every mount directly in dir, a path to the
// covered NetnsDir: its copies in the new mount point keep the namespaces.
func detachCovered(dir string) error {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("list covered %s: %w", NetnsDir, err)
	}
	var errs []error
	for _, e := range entries {
		err := unix.Unmount(filepath.Join(dir, e.Name()), unix.MNT_DETACH)
		if err != nil && !errors.Is(err, unix.EINVAL) { // EINVAL: not a mount point
			errs = append(errs, fmt.Errorf("detach covered %s: %w", e.Name(), err))
		}
	}
	return errors.Join(errs...)
}

// deleteNetns unmounts and removes /run/netns/<name>. A missing netns, or
// a file left without its mount by a crash, is not an error.
func deleteNetns(name string) error {
	path := NetnsPath(name)
	err := unix.Unmount(path, unix.MNT_DETACH)
	if err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("unmount netns %s: %w", name, err)
	}
	err = os.Remove(path)
	if errors.Is(err, unix.EBUSY) {
		// Still a mount point in a mount of NetnsDir that another is
		// over: left by a lab from before shareNetnsDir, or by a tool
		// that mounted there without sharing the directory.
		return fmt.Errorf("remove netns %s: %w (a mount of %s over itself hides another mount of it; see /proc/self/mountinfo)", name, err, NetnsDir)
	}
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("remove netns %s: %w", name, err)
	}
	return nil
}

// netnsExists reports whether /run/netns/<name> is a mounted namespace.
func netnsExists(name string) bool {
	var st unix.Statfs_t
	if err := unix.Statfs(NetnsPath(name), &st); err != nil {
		return false
	}
	return st.Type == unix.NSFS_MAGIC
}

// labNetns lists the names under /run/netns that belong to lab prefix, in
// the order they are deleted in (see filterLabNetns).
func labNetns(prefix string) ([]string, error) {
	entries, err := os.ReadDir(NetnsDir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("list netns: %w", err)
	}
	names := make([]string, 0, len(entries))
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return filterLabNetns(prefix, names), nil
}

// filterLabNetns keeps the names of lab prefix: <prefix>-underlay,
// <prefix>-n<i> and <prefix>-n<i>-p<j>; pods first, then nodes, then the
// underlay.
func filterLabNetns(prefix string, names []string) []string {
	re := regexp.MustCompile(`^` + regexp.QuoteMeta(prefix) + `-(underlay|n[0-9]+(-p[0-9]+)?)$`)
	rank := func(name string) int {
		m := re.FindStringSubmatch(name)
		switch {
		case m[1] == "underlay":
			return 2
		case m[2] == "":
			return 1
		}
		return 0
	}
	var out []string
	for _, n := range names {
		if re.MatchString(n) {
			out = append(out, n)
		}
	}
	sort.SliceStable(out, func(i, j int) bool { return rank(out[i]) < rank(out[j]) })
	return out
}

// inNetns runs fn on an OS thread inside the named netns. Sockets fn
// creates stay in that netns; processes it starts are born there.
func inNetns(name string, fn func() error) error {
	h, err := ns.GetNS(NetnsPath(name))
	if err != nil {
		return fmt.Errorf("open netns %s: %w", name, err)
	}
	defer h.Close()
	return h.Do(func(ns.NetNS) error { return fn() })
}

// netnsInode returns the inode identifying the named netns.
func netnsInode(name string) (uint64, error) {
	var st unix.Stat_t
	if err := unix.Stat(NetnsPath(name), &st); err != nil {
		return 0, fmt.Errorf("stat netns %s: %w", name, err)
	}
	return st.Ino, nil
}

// writeSysctl writes value to /proc/sys/<key> (key in slash form) of the
// calling thread's netns; run it inside inNetns.
func writeSysctl(key, value string) error {
	if err := os.WriteFile(filepath.Join("/proc/sys", key), []byte(value), 0o644); err != nil {
		return fmt.Errorf("sysctl %s=%s: %w", key, value, err)
	}
	return nil
}
