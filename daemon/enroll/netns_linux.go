package enroll

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// Netns is one network namespace found on the node.
type Netns struct {
	// Path opens it: a bind mount under /run/netns or /var/run/netns when
	// one exists (it lives as long as the sandbox), else /proc/PID/ns/net
	// of a process in it (which dies with that process).
	Path string
	// Ino is the namespace's inode number (its identity).
	Ino uint64
	// Addrs are its interfaces' addresses, loopback and link-local left
	// out.
	Addrs []netip.Addr
}

// Finder finds the network namespace of a running pod without asking the
// container runtime, the way Istio ambient's node agent does: it lists
// every netns on the node, from the runtime's bind mounts (containerd and
// CRI-O pin each sandbox's netns at /var/run/netns/cni-<id>) and from
// /proc/PID/ns/net of every process (runtimes that pin nothing, and
// whatever the mounts miss), deduplicated by inode, and looks for the pod's
// address on the interfaces inside each one (netlink, from a socket opened
// in that netns). The node's own netns (the daemon's, and PID 1's) is never
// a candidate: a hostNetwork pod has the node's address, and rules there
// would capture the whole node.
//
// Seeing other processes' /proc entries needs the host PID namespace
// (hostPID) in a DaemonSet; with containerd or CRI-O the bind mounts under
// /var/run/netns (mounted into the daemon's pod anyway) are enough.
type Finder struct {
	// NetnsDirs are scanned for bind mounts; DefaultNetnsDirs when nil,
	// none when empty and non-nil.
	NetnsDirs []string
	// Proc is the proc mount; "/proc" when empty. NoProc skips the process
	// scan.
	Proc   string
	NoProc bool
}

// DefaultNetnsDirs are where runtimes pin network namespaces.
var DefaultNetnsDirs = []string{"/run/netns", "/var/run/netns"}

func (f *Finder) proc() string {
	if f.Proc == "" {
		return "/proc"
	}
	return f.Proc
}

// nsIno returns the inode of the namespace file at path if it is a network
// namespace (nsfs, or a /proc ns link).
func nsIno(path string) (uint64, bool) {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return 0, false
	}
	var fs unix.Statfs_t
	if err := unix.Statfs(path, &fs); err != nil || (fs.Type != unix.NSFS_MAGIC && fs.Type != unix.PROC_SUPER_MAGIC) {
		return 0, false
	}
	return st.Ino, true
}

// NodeNetns returns the inodes of the node's own network namespaces: the
// daemon's and PID 1's. They are never enrolled.
func (f *Finder) NodeNetns() map[uint64]bool {
	out := map[uint64]bool{}
	for _, p := range []string{"/proc/self/ns/net", "/proc/thread-self/ns/net", filepath.Join(f.proc(), "1/ns/net")} {
		if ino, ok := nsIno(p); ok {
			out[ino] = true
		}
	}
	return out
}

// List returns every network namespace on the node but the node's own,
// with their addresses. Namespaces that vanish during the scan are left
// out.
func (f *Finder) List() ([]Netns, error) {
	node := f.NodeNetns()
	if len(node) == 0 {
		return nil, errors.New("cannot identify the node's own netns")
	}
	seen := map[uint64]bool{}
	var found []Netns
	add := func(path string) {
		ino, ok := nsIno(path)
		if !ok || seen[ino] || node[ino] {
			return
		}
		seen[ino] = true
		found = append(found, Netns{Path: path, Ino: ino})
	}
	dirs := f.NetnsDirs
	if dirs == nil {
		dirs = DefaultNetnsDirs
	}
	for _, d := range dirs {
		ents, err := os.ReadDir(d)
		if err != nil {
			continue
		}
		for _, e := range ents {
			add(filepath.Join(d, e.Name()))
		}
	}
	if !f.NoProc {
		ents, err := os.ReadDir(f.proc())
		if err != nil {
			return nil, fmt.Errorf("list processes: %w", err)
		}
		for _, e := range ents {
			if _, err := strconv.Atoi(e.Name()); err != nil {
				continue
			}
			add(filepath.Join(f.proc(), e.Name(), "ns", "net"))
		}
	}
	out := found[:0]
	for _, n := range found {
		addrs, err := Addrs(n.Path)
		if err != nil {
			continue // gone meanwhile
		}
		n.Addrs = addrs
		out = append(out, n)
	}
	return out, nil
}

// Find returns the network namespace that holds any of ips. It fails when
// none does, and when more than one does (ambiguous: enrolling the wrong
// one would redirect another pod's traffic).
func Find(all []Netns, ips []netip.Addr) (Netns, error) {
	var hit []Netns
	for _, n := range all {
		for _, a := range n.Addrs {
			if containsAddr(ips, a) {
				hit = append(hit, n)
				break
			}
		}
	}
	switch len(hit) {
	case 0:
		return Netns{}, fmt.Errorf("no network namespace on this node has address %v", ips)
	case 1:
		return hit[0], nil
	default:
		paths := make([]string, len(hit))
		for i, h := range hit {
			paths[i] = h.Path
		}
		return Netns{}, fmt.Errorf("address %v is in %d network namespaces %v: ambiguous, not enrolled", ips, len(hit), paths)
	}
}

func containsAddr(l []netip.Addr, a netip.Addr) bool {
	for _, x := range l {
		if x == a {
			return true
		}
	}
	return false
}

// Addrs lists the addresses of the interfaces in the netns at path, from a
// netlink socket created in that netns (the calling thread does not stay
// there).
func Addrs(path string) ([]netip.Addr, error) {
	h, err := netns.GetFromPath(path)
	if err != nil {
		return nil, err
	}
	defer h.Close()
	nl, err := netlink.NewHandleAt(h, unix.NETLINK_ROUTE)
	if err != nil {
		return nil, fmt.Errorf("netlink in %s: %w", path, err)
	}
	defer nl.Close()
	list, err := nl.AddrList(nil, netlink.FAMILY_ALL)
	if err != nil {
		return nil, fmt.Errorf("addresses in %s: %w", path, err)
	}
	var out []netip.Addr
	for _, a := range list {
		ip, ok := netip.AddrFromSlice(a.IP)
		if !ok {
			continue
		}
		ip = ip.Unmap()
		if ip.IsLoopback() || ip.IsLinkLocalUnicast() {
			continue
		}
		out = append(out, ip)
	}
	return out, nil
}
