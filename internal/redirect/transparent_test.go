package redirect

import (
	"context"
	"errors"
	"io"
	"net"
	"net/netip"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/meshless/meshless/internal/nstest"
	"github.com/meshless/meshless/internal/wellknown"
)

// noReplyAfter bounds the negative control: without the return routing the
// transparent connect gets no SYN-ACK and can only time out. A reply that
// is routed back arrives in microseconds, so this is a failure-path bound.
const noReplyAfter = time.Second

// Addresses of the transparent-source test: the pod and its peer behind a
// veth pair (the peer is also the pod's default gateway, as a node is), and
// a foreign client address that is local nowhere.
var (
	tpPod4     = netip.MustParseAddr("198.18.210.2")
	tpPeer4    = netip.MustParseAddr("198.18.210.1")
	tpForeign4 = netip.MustParseAddr("198.18.77.9")
	tpPod6     = netip.MustParseAddr("2001:2:0:210::2")
	tpPeer6    = netip.MustParseAddr("2001:2:0:210::1")
	tpForeign6 = netip.MustParseAddr("2001:2:0:77::9")
)

// wireGateway is wireAddrs plus default routes of the pod via the peer: a
// real pod has one, and without it the app's reply would fail the routing
// lookup of its socket before any netfilter hook could re-route it.
func wireGateway(t *testing.T, pod, peer ns.NetNS) {
	t.Helper()
	wireAddrs(t, pod, peer, tpPod4, tpPeer4, tpPod6, tpPeer6)
	err := inNS(t, pod, func() error {
		l, err := netlink.LinkByName("eth0")
		if err != nil {
			return err
		}
		for _, gw := range []netip.Addr{tpPeer4, tpPeer6} {
			if err := netlink.RouteAdd(&netlink.Route{LinkIndex: l.Attrs().Index, Gw: gw.AsSlice()}); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatalf("default routes: %v", err)
	}
}

// dialTransparent connects from inside n as the daemon does for a client it
// stands in for: IP_TRANSPARENT, bound to a foreign source address, with
// the socket mark mark.
func dialTransparent(n ns.NetNS, from netip.Addr, to netip.AddrPort, mark uint32, timeout time.Duration) (net.Conn, error) {
	d := net.Dialer{
		Timeout:   timeout,
		LocalAddr: &net.TCPAddr{IP: from.AsSlice()},
		Control: func(_, _ string, c syscall.RawConn) error {
			var serr error
			err := c.Control(func(fd uintptr) {
				level, opt := unix.SOL_IP, unix.IP_TRANSPARENT
				if from.Is6() {
					level, opt = unix.SOL_IPV6, unix.IPV6_TRANSPARENT
				}
				serr = errors.Join(unix.SetsockoptInt(int(fd), level, opt, 1),
					unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_MARK, int(mark)))
			})
			return errors.Join(err, serr)
		},
	}
	var c net.Conn
	err := n.Do(func(ns.NetNS) (err error) {
		c, err = d.DialContext(context.Background(), "tcp", to.String())
		return err
	})
	return c, err
}

// echoOnce accepts one connection on l, checks its client address and
// echoes what it reads; it returns the error of the whole exchange.
func echoOnce(l *net.TCPListener, client netip.Addr) <-chan error {
	done := make(chan error, 1)
	go func() {
		done <- func() error {
			if err := l.SetDeadline(time.Now().Add(failAfter)); err != nil {
				return err
			}
			s, err := l.AcceptTCP()
			if err != nil {
				return err
			}
			defer s.Close()
			if got := s.RemoteAddr().(*net.TCPAddr).AddrPort().Addr().Unmap(); got != client {
				return errors.New("app sees client " + got.String() + ", want " + client.String())
			}
			if err := s.SetDeadline(time.Now().Add(failAfter)); err != nil {
				return err
			}
			buf := make([]byte, 64)
			k, err := s.Read(buf)
			if err != nil {
				return err
			}
			_, err = s.Write(append([]byte("echo:"), buf[:k]...))
			return err
		}()
	}()
	return done
}

// TestRootTransparentE2E plays the daemon's transparent connection into
// the pod's app for every backend: from inside the pod netns, a socket with
// IP_TRANSPARENT and wellknown.TransparentMark, bound to a foreign address,
// connects to the pod's own address. The app must see the foreign address
// and bytes must flow both ways, which needs the app's replies routed back
// to the local socket instead of out of eth0. A socket with only the skip
// mark still goes out of eth0. After Remove the same connect gets no reply
// (negative control) and no ip rule or route of ours is left.
//
// The rules have nothing in PREROUTING, and this test is what shows none is
// needed: both directions are sent inside the pod netns (OUTPUT, where the
// mark is saved and restored and the packet re-routed) and come back in
// over lo with their conntrack entry already attached.
func TestRootTransparentE2E(t *testing.T) {
	nstest.RequireRoot(t)
	spec := DefaultSpec()
	spec.IPv4, spec.IPv6 = true, true
	families := []struct {
		name               string
		pod, peer, foreign netip.Addr
		network, any       string
	}{
		{"v4", tpPod4, tpPeer4, tpForeign4, "tcp4", "0.0.0.0"},
		{"v6", tpPod6, tpPeer6, tpForeign6, "tcp6", "::"},
	}
	for _, c := range backendCases {
		t.Run(c.name, func(t *testing.T) {
			pod, peer := nstest.New(t), nstest.New(t)
			wireGateway(t, pod, peer)
			b := c.new(t)
			if err := inNS(t, pod, func() error { return b.Apply(spec) }); err != nil {
				t.Fatalf("Apply: %v", err)
			}
			if err := inNS(t, pod, func() error { return b.Check(spec) }); err != nil {
				t.Fatalf("Check: %v", err)
			}
			if d := ourRoutes(t, pod, spec); !strings.Contains(d, "fwmark 0x10000/0x10000 lookup 19788") {
				t.Errorf("ip rules of ours:\n%s", d)
			}

			apps := map[string]*net.TCPListener{}
			for _, f := range families {
				apps[f.name] = listen(t, pod, f.network, net.JoinHostPort(f.any, "8080"))
			}
			for _, f := range families {
				t.Run(f.name, func(t *testing.T) {
					app := apps[f.name]
					served := echoOnce(app, f.foreign)
					conn, err := dialTransparent(pod, f.foreign, netip.AddrPortFrom(f.pod, 8080), wellknown.TransparentMark, failAfter)
					if err != nil {
						t.Fatalf("transparent connect from %s: %v", f.foreign, err)
					}
					defer conn.Close()
					if err := conn.SetDeadline(time.Now().Add(failAfter)); err != nil {
						t.Fatal(err)
					}
					if _, err := conn.Write([]byte("ping")); err != nil {
						t.Fatalf("write: %v", err)
					}
					got, err := io.ReadAll(io.LimitReader(conn, int64(len("echo:ping"))))
					if err != nil || string(got) != "echo:ping" {
						t.Errorf("read %q, %v; want %q", got, err, "echo:ping")
					}
					if err := <-served; err != nil {
						t.Errorf("app: %v", err)
					}
				})
				t.Run(f.name+" skip mark only goes out of eth0", func(t *testing.T) {
					real := listen(t, peer, f.network, netip.AddrPortFrom(f.peer, 9000).String())
					conn := dial(t, pod, netip.AddrPortFrom(f.peer, 9000), wellknown.SkipMark)
					s := acceptFrom(t, real, conn)
					if got := s.RemoteAddr().(*net.TCPAddr).AddrPort().Addr().Unmap(); got != f.pod {
						t.Errorf("peer sees %s, want the pod %s", got, f.pod)
					}
				})
			}

			if err := inNS(t, pod, b.Remove); err != nil {
				t.Fatalf("Remove: %v", err)
			}
			if d := routingDump(t, pod); strings.Contains(d, "proto 77") || strings.Contains(d, "19788") {
				t.Errorf("ip rules or routes left after Remove:\n%s", d)
			}
			if err := inNS(t, pod, func() error { return b.Check(spec) }); err == nil {
				t.Error("Check passed after Remove")
			}
			for _, f := range families {
				conn, err := dialTransparent(pod, f.foreign, netip.AddrPortFrom(f.pod, 8080), wellknown.TransparentMark, noReplyAfter)
				if err == nil {
					conn.Close()
					t.Errorf("%s: transparent connect succeeded without the return routing", f.name)
				} else if !errors.Is(err, unix.ETIMEDOUT) && !strings.Contains(err.Error(), "timeout") {
					t.Errorf("%s: transparent connect without the return routing = %v, want a timeout", f.name, err)
				}
			}
		})
	}
}
