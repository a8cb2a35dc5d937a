package podnet

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"os"
	"runtime"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/meshless/meshless/internal/nstest"
	"github.com/meshless/meshless/internal/wellknown"
)

// Addresses of the test netns: podIP on its lo, blackholeNet routed into lo
// (SYNs vanish), foreignNet routed locally by a policy rule only, so it is
// not a local address to bind(2) without IP_TRANSPARENT.
var (
	podIP        = netip.MustParseAddr("198.18.77.1")
	blackholeNet = netip.MustParsePrefix("198.18.255.0/24")
	foreignNet   = netip.MustParsePrefix("198.18.88.0/24")
	foreignIP    = netip.MustParseAddr("198.18.88.5")
)

func ipnet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}

// testNS makes a netns with the addresses and routes above and opens it.
func testNS(t *testing.T) (ns.NetNS, *NS) {
	t.Helper()
	netns := nstest.New(t)
	err := netns.Do(func(ns.NetNS) error {
		lo, err := netlink.LinkByName("lo")
		if err != nil {
			return err
		}
		if err := netlink.AddrAdd(lo, &netlink.Addr{IPNet: ipnet(netip.PrefixFrom(podIP, 32))}); err != nil {
			return err
		}
		if err := netlink.RouteAdd(&netlink.Route{LinkIndex: lo.Attrs().Index, Dst: ipnet(blackholeNet), Scope: netlink.SCOPE_LINK}); err != nil {
			return err
		}
		if err := netlink.RouteAdd(&netlink.Route{LinkIndex: lo.Attrs().Index, Dst: ipnet(foreignNet),
			Type: unix.RTN_LOCAL, Table: 100, Scope: netlink.SCOPE_HOST}); err != nil {
			return err
		}
		rule := netlink.NewRule()
		rule.Dst = ipnet(foreignNet)
		rule.Table = 100
		rule.Priority = 100
		return netlink.RuleAdd(rule)
	})
	if err != nil {
		t.Fatalf("set up netns: %v", err)
	}
	n, err := Open(netns.Path())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close() })
	return netns, n
}

// listenIn listens on podIP inside netns with a plain listener (no mark)
// and returns it with a channel of its accepted connections.
func listenIn(t *testing.T, netns ns.NetNS) (net.Listener, chan net.Conn) {
	t.Helper()
	var ln net.Listener
	err := netns.Do(func(ns.NetNS) error {
		var err error
		ln, err = net.Listen("tcp4", netip.AddrPortFrom(podIP, 0).String())
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	acc := make(chan net.Conn, 16)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			acc <- c
		}
	}()
	return ln, acc
}

func threadNetns(t *testing.T) string {
	t.Helper()
	s, err := os.Readlink("/proc/thread-self/ns/net")
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func sockInt(t *testing.T, c *net.TCPConn, level, opt int) int {
	t.Helper()
	rc, err := c.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var v int
	var serr error
	if err := rc.Control(func(fd uintptr) { v, serr = unix.GetsockoptInt(int(fd), level, opt) }); err != nil {
		t.Fatal(err)
	}
	if serr != nil {
		t.Fatal(serr)
	}
	return v
}

func accepted(t *testing.T, acc chan net.Conn) net.Conn {
	t.Helper()
	select {
	case c := <-acc:
		t.Cleanup(func() { c.Close() })
		return c
	case <-time.After(5 * time.Second):
		t.Fatal("no connection accepted")
		return nil
	}
}

// TestDialInNetns dials from a goroutine whose thread is in the host netns:
// the socket is in the pod netns (its source is the pod's address, a
// listener that exists only there accepts it), carries the skip mark, and
// the calling thread never leaves its netns.
func TestDialInNetns(t *testing.T) {
	nstest.RequireRoot(t)
	netns, n := testNS(t)
	ln, acc := listenIn(t, netns)
	addr := ln.Addr().(*net.TCPAddr).AddrPort()

	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	before := threadNetns(t)
	for _, network := range []string{"tcp4", "tcp"} {
		c, err := n.Dial(context.Background(), network, addr.String(), DialOptions{})
		if err != nil {
			t.Fatalf("%s: %v", network, err)
		}
		if after := threadNetns(t); after != before {
			t.Fatalf("calling thread moved from %s to %s", before, after)
		}
		if got := c.LocalAddr().(*net.TCPAddr).AddrPort().Addr(); got != podIP {
			t.Errorf("local address %v, want %v (the pod netns's)", got, podIP)
		}
		if got := c.RemoteAddr().(*net.TCPAddr).AddrPort(); got != addr {
			t.Errorf("remote address %v, want %v", got, addr)
		}
		if m := sockInt(t, c, unix.SOL_SOCKET, unix.SO_MARK); uint32(m) != wellknown.SkipMark {
			t.Errorf("mark %#x, want %#x", m, wellknown.SkipMark)
		}
		if v := sockInt(t, c, unix.IPPROTO_TCP, unix.TCP_NODELAY); v == 0 {
			t.Error("TCP_NODELAY off, want on as net.Dial sets it")
		}
		s := accepted(t, acc)
		if _, err := c.Write([]byte("x")); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 1)
		s.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := s.Read(buf); err != nil || buf[0] != 'x' {
			t.Fatalf("read %q, %v", buf, err)
		}
		c.Close()
	}

	// A chosen mark.
	c, err := n.Dial(context.Background(), "tcp4", addr.String(), DialOptions{Mark: wellknown.SkipMark | 0x20000})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if m := sockInt(t, c, unix.SOL_SOCKET, unix.SO_MARK); uint32(m) != wellknown.SkipMark|0x20000 {
		t.Errorf("mark %#x, want %#x", m, wellknown.SkipMark|0x20000)
	}
	accepted(t, acc)

	// The host netns has no such listener: the address is the pod's only.
	d := net.Dialer{Timeout: 300 * time.Millisecond}
	if hc, err := d.Dial("tcp4", addr.String()); err == nil {
		hc.Close()
		t.Errorf("host netns reached %v: the test proves nothing", addr)
	}

	// Refused inside the netns: the same error net.Dial gives.
	ln2, _ := listenIn(t, netns)
	closed := ln2.Addr().String()
	ln2.Close()
	if _, err := n.Dial(context.Background(), "tcp4", closed, DialOptions{}); !errors.Is(err, unix.ECONNREFUSED) {
		t.Errorf("dial closed port: %v, want ECONNREFUSED", err)
	}
}

// TestDialTransparent binds a foreign source address with IP_TRANSPARENT
// and the transparent mark: the server sees that address.
func TestDialTransparent(t *testing.T) {
	nstest.RequireRoot(t)
	netns, n := testNS(t)
	ln, acc := listenIn(t, netns)
	addr := ln.Addr().(*net.TCPAddr).AddrPort()

	// Without IP_TRANSPARENT the address is not bindable: it is foreign.
	err := netns.Do(func(ns.NetNS) error {
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: foreignIP.AsSlice()}}
		c, err := d.Dial("tcp4", addr.String())
		if err == nil {
			c.Close()
		}
		return err
	})
	if !errors.Is(err, unix.EADDRNOTAVAIL) {
		t.Fatalf("plain bind of %v: %v, want EADDRNOTAVAIL", foreignIP, err)
	}

	for _, src := range []netip.Addr{foreignIP, netip.AddrFrom16(foreignIP.As16())} {
		c, err := n.Dial(context.Background(), "tcp4", addr.String(), DialOptions{Source: src})
		if err != nil {
			t.Fatalf("source %v: %v", src, err)
		}
		if got := c.LocalAddr().(*net.TCPAddr).AddrPort().Addr(); got != foreignIP {
			t.Errorf("local address %v, want %v", got, foreignIP)
		}
		if m := sockInt(t, c, unix.SOL_SOCKET, unix.SO_MARK); uint32(m) != wellknown.TransparentMark {
			t.Errorf("mark %#x, want %#x", m, wellknown.TransparentMark)
		}
		if v := sockInt(t, c, unix.SOL_IP, unix.IP_TRANSPARENT); v != 1 {
			t.Errorf("IP_TRANSPARENT %d", v)
		}
		s := accepted(t, acc)
		if got := s.RemoteAddr().(*net.TCPAddr).AddrPort().Addr(); got != foreignIP {
			t.Errorf("server sees %v, want %v", got, foreignIP)
		}
		c.Close()
	}
}

// TestDialCancel: a connect to an address whose SYNs vanish ends with ctx,
// by deadline or by cancellation, promptly.
func TestDialCancel(t *testing.T) {
	nstest.RequireRoot(t)
	_, n := testNS(t)
	blackhole := netip.AddrPortFrom(blackholeNet.Addr().Next().Next(), 80).String()

	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	start := time.Now()
	_, err := n.Dial(ctx, "tcp4", blackhole, DialOptions{})
	cancel()
	if err == nil || !errors.Is(err, os.ErrDeadlineExceeded) && !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("dial: %v, want a timeout", err)
	}
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() {
		t.Errorf("%v: not a net.Error timeout", err)
	}
	if d := time.Since(start); d < 150*time.Millisecond || d > 2*time.Second {
		t.Errorf("timed out after %v, want ~200ms", d)
	}

	ctx, cancel = context.WithCancel(context.Background())
	time.AfterFunc(200*time.Millisecond, cancel)
	start = time.Now()
	_, err = n.Dial(ctx, "tcp4", blackhole, DialOptions{})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("dial: %v, want cancelled", err)
	}
	if d := time.Since(start); d < 150*time.Millisecond || d > 2*time.Second {
		t.Errorf("cancelled after %v, want ~200ms", d)
	}

	// Already cancelled: fails at once.
	if _, err := n.Dial(ctx, "tcp4", blackhole, DialOptions{}); !errors.Is(err, context.Canceled) {
		t.Errorf("dial with cancelled ctx: %v", err)
	}
}

// BenchmarkDial measures one dial into a netns (with accept and close).
func BenchmarkDial(b *testing.B) {
	nstest.RequireRoot(b)
	netns := nstest.New(b)
	n, err := Open(netns.Path())
	if err != nil {
		b.Fatal(err)
	}
	defer n.Close()
	ln, err := n.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	addr := ln.Addr().String()
	ctx := context.Background()
	b.ResetTimer()
	for b.Loop() {
		c, err := n.Dial(ctx, "tcp4", addr, DialOptions{})
		if err != nil {
			b.Fatal(err)
		}
		c.Close()
	}
}

// TestListenLoopbackDown: a netns whose lo is still down (a runtime that
// runs the CNI chain before its loopback plugin) gets lo brought up and
// the listener on ::1 opened, instead of "cannot assign requested
// address", and reachable.
func TestListenLoopbackDown(t *testing.T) {
	netns := nstest.NewBare(t)
	n, err := Open(netns.Path())
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	ln, err := n.Listen("tcp6", "[::1]:0")
	if err != nil {
		t.Fatalf("listen with lo down: %v", err)
	}
	defer ln.Close()
	var up bool
	netns.Do(func(ns.NetNS) error {
		lo, err := netlink.LinkByName("lo")
		up = err == nil && lo.Attrs().Flags&net.FlagUp != 0
		return err
	})
	if !up {
		t.Error("lo still down after Listen")
	}
	c, err := n.Dial(context.Background(), "tcp6", ln.Addr().String(), DialOptions{})
	if err != nil {
		t.Fatalf("dial the listener: %v", err)
	}
	c.Close()
}
