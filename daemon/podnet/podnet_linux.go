// Package podnet opens sockets inside other network namespaces: the
// daemon's listeners in each pod netns and its connections from or to a pod
// without crossing the pod's veth.
//
//	n, err := podnet.Open("/var/run/netns/pod-a")
//	defer n.Close()
//	ln, err := n.Listen("tcp4", "127.0.0.1:15001")
//	c, err := n.Dial(ctx, "tcp4", "198.19.1.5:8080", podnet.DialOptions{})
//
// A socket belongs to the netns it was created in for its whole life, so the
// daemon enters a pod netns only for the instant of creating a socket; the
// listener then accepts from ordinary goroutines.
package podnet

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"runtime"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/vishvananda/netlink"

	"github.com/meshless/meshless/internal/wellknown"
)

// hostNS is the daemon's own netns, opened once: every switch into a pod
// netns ends by switching back to it.
var hostNS = func() *os.File {
	f, err := os.Open(fmt.Sprintf("/proc/self/task/%d/ns/net", unix.Gettid()))
	if err != nil {
		return nil
	}
	return f
}()

// NS is an open handle on a network namespace. Holding the file keeps the
// namespace alive and lets the daemon detect that the path is gone.
type NS struct {
	path string
	f    *os.File
}

// Open opens the network namespace at path (a bind mount such as
// /var/run/netns/X or /proc/PID/ns/net).
func Open(path string) (*NS, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("open netns %s: %w", path, err)
	}
	var st unix.Statfs_t
	if err := unix.Fstatfs(int(f.Fd()), &st); err != nil {
		f.Close()
		return nil, fmt.Errorf("stat netns %s: %w", path, err)
	}
	if st.Type != unix.NSFS_MAGIC && st.Type != unix.PROC_SUPER_MAGIC {
		f.Close()
		return nil, fmt.Errorf("%s is not a network namespace", path)
	}
	return &NS{path: path, f: f}, nil
}

// Path is the path the namespace was opened from.
func (n *NS) Path() string { return n.path }

// Close releases the handle.
func (n *NS) Close() error { return n.f.Close() }

// Do runs fn with the calling goroutine's OS thread inside the namespace.
//
// Hazard: setns(2) changes the netns of one OS thread, not of the process,
// so the goroutine is locked to its thread for the call. If switching back
// fails the thread stays locked and the runtime discards it when the
// goroutine ends, instead of reusing a thread in the wrong netns. fn must
// not start goroutines that expect to be in the namespace.
func (n *NS) Do(fn func() error) error {
	if hostNS == nil {
		return fmt.Errorf("daemon netns handle unavailable")
	}
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		if err := unix.Setns(int(n.f.Fd()), unix.CLONE_NEWNET); err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("enter netns %s: %w", n.path, err)
			return
		}
		err := fn()
		if rerr := unix.Setns(int(hostNS.Fd()), unix.CLONE_NEWNET); rerr != nil {
			// Leave the thread locked: it dies with this goroutine.
			errc <- fmt.Errorf("return from netns %s: %w", n.path, rerr)
			return
		}
		runtime.UnlockOSThread()
		errc <- err
	}()
	return <-errc
}

// markControl sets mark (the skip mark or the transparent mark, which
// includes it) on a socket before it binds or connects, so
// the pod's redirection rules let its packets pass.
func markControl(mark uint32, extra func(fd uintptr) error) func(network, address string, c syscall.RawConn) error {
	return func(network, address string, c syscall.RawConn) error {
		var serr error
		err := c.Control(func(fd uintptr) {
			serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_MARK, int(mark))
			if serr == nil && extra != nil {
				serr = extra(fd)
			}
		})
		if err != nil {
			return err
		}
		return serr
	}
}

// Listen opens a TCP listener inside the namespace. Its sockets carry the
// skip mark.
//
// A namespace starts with its loopback interface down: ::1 cannot be
// bound then ("bind: cannot assign requested address"), and 127.0.0.1 can
// but nothing reaches it ("network is unreachable"). A runtime that runs
// the CNI chain before its loopback plugin, or without one, would leave the
// pod's redirected connections nowhere to go; so for a loopback address
// Listen brings lo up first, as the loopback plugin would.
func (n *NS) Listen(network, addr string) (net.Listener, error) {
	var ln net.Listener
	err := n.Do(func() error {
		if isLoopback(addr) {
			if err := loopbackUp(); err != nil {
				return fmt.Errorf("bring up the netns's loopback interface: %w", err)
			}
		}
		lc := net.ListenConfig{Control: markControl(wellknown.SkipMark, nil)}
		var err error
		ln, err = lc.Listen(context.Background(), network, addr)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("listen %s in %s: %w", addr, n.path, err)
	}
	return ln, nil
}

// isLoopback reports whether the host part of addr is a loopback address.
func isLoopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.IsLoopback()
}

// loopbackUp sets the calling thread's netns's lo up unless it is.
func loopbackUp() error {
	lo, err := netlink.LinkByName("lo")
	if err != nil {
		return err
	}
	if lo.Attrs().Flags&net.FlagUp != 0 {
		return nil
	}
	return netlink.LinkSetUp(lo)
}

// DialOptions tune a connection made from inside a namespace.
type DialOptions struct {
	// Source, when valid, is bound as the connection's source address with
	// IP_TRANSPARENT, so the server sees the original client's address even
	// though it is not local to this namespace. The namespace needs routing
	// that returns the replies to the daemon (see the CNI plugin's rules).
	Source netip.Addr
	// Mark is the socket mark (SO_MARK). Zero means wellknown.SkipMark for a
	// connection without Source and wellknown.TransparentMark with one: the
	// transparent mark selects the pod's return routing for replies to
	// the foreign source. Any mark must include SkipMark under
	// SkipMarkMask, or the pod's rules redirect the connection back to the
	// daemon.
	Mark uint32
}

// Dial connects to addr from inside the namespace. The socket carries the
// skip mark.
//
// The goroutine's thread stays in the namespace until the connection is
// established or fails, so ctx should bound the time.
func (n *NS) Dial(ctx context.Context, network, addr string, o DialOptions) (*net.TCPConn, error) {
	d := net.Dialer{}
	var extra func(fd uintptr) error
	mark := o.Mark
	if mark == 0 {
		mark = wellknown.SkipMark
		if o.Source.IsValid() {
			mark = wellknown.TransparentMark
		}
	}
	if o.Source.IsValid() {
		d.LocalAddr = &net.TCPAddr{IP: o.Source.AsSlice()}
		v6 := o.Source.Is6() && !o.Source.Is4In6()
		extra = func(fd uintptr) error {
			if v6 {
				return unix.SetsockoptInt(int(fd), unix.SOL_IPV6, unix.IPV6_TRANSPARENT, 1)
			}
			return unix.SetsockoptInt(int(fd), unix.SOL_IP, unix.IP_TRANSPARENT, 1)
		}
	}
	d.Control = markControl(mark, extra)
	var c net.Conn
	err := n.Do(func() error {
		var err error
		c, err = d.DialContext(ctx, network, addr)
		return err
	})
	if err != nil {
		return nil, err
	}
	return c.(*net.TCPConn), nil
}

// Exists reports whether path still names a network namespace; the daemon
// uses it to drop pods whose netns is gone.
func Exists(path string) bool {
	var st unix.Statfs_t
	if err := unix.Statfs(path, &st); err != nil {
		return false
	}
	return st.Type == unix.NSFS_MAGIC || st.Type == unix.PROC_SUPER_MAGIC
}
