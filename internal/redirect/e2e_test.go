package redirect

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/meshless/meshless/internal/nstest"
	"github.com/meshless/meshless/internal/wellknown"
)

// failAfter bounds every wait of the end-to-end test; a connection that
// goes where it should arrives at once, so it is only reached on failure.
const failAfter = 5 * time.Second

// Addresses of the pod and of a peer netns behind a veth pair: the peer is
// the "real destination" that un-redirected connections reach.
var (
	pod4  = netip.MustParseAddr("198.18.200.2")
	peer4 = netip.MustParseAddr("198.18.200.1")
	pod6  = netip.MustParseAddr("2001:2:0:200::2")
	peer6 = netip.MustParseAddr("2001:2:0:200::1")
)

// wire connects pod and peer with a veth pair carrying both families.
func wire(t *testing.T, pod, peer ns.NetNS) {
	t.Helper()
	wireAddrs(t, pod, peer, pod4, peer4, pod6, peer6)
}

// wireAddrs is wire with the addresses given (/24 and /64).
func wireAddrs(t *testing.T, pod, peer ns.NetNS, pod4, peer4, pod6, peer6 netip.Addr) {
	t.Helper()
	addrs := func(l netlink.Link, a4, a6 netip.Addr) error {
		for _, a := range []netip.Prefix{netip.PrefixFrom(a4, 24), netip.PrefixFrom(a6, 64)} {
			// NODAD: a tentative IPv6 address cannot be used yet, and
			// waiting for DAD would be a sleep.
			addr := &netlink.Addr{IPNet: &net.IPNet{IP: a.Addr().AsSlice(), Mask: net.CIDRMask(a.Bits(), a.Addr().BitLen())}, Flags: unix.IFA_F_NODAD}
			if err := netlink.AddrAdd(l, addr); err != nil {
				return err
			}
		}
		return netlink.LinkSetUp(l)
	}
	err := inNS(t, pod, func() error {
		veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "eth0"}, PeerName: "peer0"}
		if err := netlink.LinkAdd(veth); err != nil {
			return err
		}
		p, err := netlink.LinkByName("peer0")
		if err != nil {
			return err
		}
		if err := netlink.LinkSetNsFd(p, int(peer.Fd())); err != nil {
			return err
		}
		l, err := netlink.LinkByName("eth0")
		if err != nil {
			return err
		}
		return addrs(l, pod4, pod6)
	})
	if err != nil {
		t.Fatalf("wire pod: %v", err)
	}
	err = inNS(t, peer, func() error {
		l, err := netlink.LinkByName("peer0")
		if err != nil {
			return err
		}
		return addrs(l, peer4, peer6)
	})
	if err != nil {
		t.Fatalf("wire peer: %v", err)
	}
}

// listen opens a TCP listener inside n (the socket stays in n).
func listen(t *testing.T, n ns.NetNS, network, addr string) *net.TCPListener {
	t.Helper()
	var l net.Listener
	if err := inNS(t, n, func() (err error) { l, err = net.Listen(network, addr); return err }); err != nil {
		t.Fatalf("listen %s in %s: %v", addr, n.Path(), err)
	}
	t.Cleanup(func() { l.Close() })
	return l.(*net.TCPListener)
}

// dial connects from inside n, with the socket mark when mark is not 0.
func dial(t *testing.T, n ns.NetNS, to netip.AddrPort, mark uint32) net.Conn {
	t.Helper()
	d := net.Dialer{Timeout: failAfter}
	if mark != 0 {
		d.Control = func(_, _ string, c syscall.RawConn) error {
			var serr error
			err := c.Control(func(fd uintptr) { serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_MARK, int(mark)) })
			return errors.Join(err, serr)
		}
	}
	var c net.Conn
	err := inNS(t, n, func() (err error) {
		c, err = d.DialContext(context.Background(), "tcp", to.String())
		return err
	})
	if err != nil {
		t.Fatalf("dial %s from %s: %v", to, n.Path(), err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// acceptFrom accepts on l the connection whose client is c; another
// connection there, or none, fails the test.
func acceptFrom(t *testing.T, l *net.TCPListener, c net.Conn) *net.TCPConn {
	t.Helper()
	if err := l.SetDeadline(time.Now().Add(failAfter)); err != nil {
		t.Fatal(err)
	}
	s, err := l.AcceptTCP()
	if err != nil {
		t.Fatalf("accept on %s (expected the connection from %s): %v", l.Addr(), c.LocalAddr(), err)
	}
	t.Cleanup(func() { s.Close() })
	if got, want := s.RemoteAddr().String(), c.LocalAddr().String(); got != want {
		t.Fatalf("%s accepted a connection from %s, want the one from %s", l.Addr(), got, want)
	}
	return s
}

// originalDst returns SO_ORIGINAL_DST (IPv4) or IP6T_SO_ORIGINAL_DST
// (IPv6, same number 80 on SOL_IPV6) of an accepted connection.
func originalDst(t *testing.T, c *net.TCPConn) netip.AddrPort {
	t.Helper()
	raw, err := c.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var ap netip.AddrPort
	var serr error
	getsockopt := func(fd uintptr, level int, p unsafe.Pointer, size uintptr) {
		l := uint32(size)
		if _, _, e := unix.Syscall6(unix.SYS_GETSOCKOPT, fd, uintptr(level), unix.SO_ORIGINAL_DST, uintptr(p), uintptr(unsafe.Pointer(&l)), 0); e != 0 {
			serr = e
		}
	}
	port := func(p *uint16) uint16 { b := (*[2]byte)(unsafe.Pointer(p)); return uint16(b[0])<<8 | uint16(b[1]) }
	err = raw.Control(func(fd uintptr) {
		if c.LocalAddr().(*net.TCPAddr).IP.To4() != nil {
			var sa unix.RawSockaddrInet4
			getsockopt(fd, unix.SOL_IP, unsafe.Pointer(&sa), unsafe.Sizeof(sa))
			ap = netip.AddrPortFrom(netip.AddrFrom4(sa.Addr), port(&sa.Port))
		} else {
			var sa unix.RawSockaddrInet6
			getsockopt(fd, unix.SOL_IPV6, unsafe.Pointer(&sa), unsafe.Sizeof(sa))
			ap = netip.AddrPortFrom(netip.AddrFrom16(sa.Addr), port(&sa.Port))
		}
	})
	if err = errors.Join(err, serr); err != nil {
		t.Fatalf("original destination: %v", err)
	}
	return ap
}

// TestRootRedirectE2E sends real connections through the rules of every
// backend: outbound TCP lands on the daemon's 15001 with its original
// destination readable, marked and excluded traffic reaches the real
// destination, inbound TCP lands on 15006; after Remove nothing is
// redirected.
func TestRootRedirectE2E(t *testing.T) {
	nstest.RequireRoot(t)
	spec := Spec{IPv4: true, IPv6: true, ExcludeOutboundPorts: []uint16{81}, ExcludeInboundPorts: []uint16{9090}}
	for _, c := range backendCases {
		t.Run(c.name, func(t *testing.T) {
			pod, peer := nstest.New(t), nstest.New(t)
			wire(t, pod, peer)
			b := c.new(t)
			if err := inNS(t, pod, func() error { return b.Apply(spec) }); err != nil {
				t.Fatalf("Apply: %v", err)
			}

			out4 := listen(t, pod, "tcp4", "127.0.0.1:15001")
			out6 := listen(t, pod, "tcp6", "[::1]:15001")
			in4 := listen(t, pod, "tcp4", "0.0.0.0:15006")
			in6 := listen(t, pod, "tcp6", "[::]:15006")
			podApp := listen(t, pod, "tcp4", "0.0.0.0:9090")
			real80 := listen(t, peer, "tcp4", peer4.String()+":80")
			real81 := listen(t, peer, "tcp4", peer4.String()+":81")
			real6 := listen(t, peer, "tcp6", "["+peer6.String()+"]:80")

			ap := netip.AddrPortFrom
			tests := []struct {
				name    string
				from    ns.NetNS
				to      netip.AddrPort
				mark    uint32
				at      *net.TCPListener
				origDst bool // check SO_ORIGINAL_DST == to
			}{
				{"outbound v4 redirected", pod, ap(peer4, 80), 0, out4, true},
				{"outbound v4 with skip mark passes", pod, ap(peer4, 80), wellknown.SkipMark, real80, false},
				// Not bit 16 (0x10000): the transparent bit routes to lo.
				{"outbound v4 other bits in mark still redirected", pod, ap(peer4, 80), 0x20000, out4, true},
				{"outbound v4 excluded port passes", pod, ap(peer4, 81), 0, real81, false},
				{"outbound to own pod ip passes (loopback)", pod, ap(pod4, 9090), 0, podApp, false},
				{"outbound v6 redirected", pod, ap(peer6, 80), 0, out6, true},
				{"outbound v6 with skip mark passes", pod, ap(peer6, 80), wellknown.SkipMark | 0x20000, real6, false},
				{"inbound v4 redirected", peer, ap(pod4, 8080), 0, in4, true},
				{"inbound v4 excluded port passes", peer, ap(pod4, 9090), 0, podApp, false},
				{"inbound v6 redirected", peer, ap(pod6, 8080), 0, in6, true},
			}
			for _, tt := range tests {
				t.Run(tt.name, func(t *testing.T) {
					conn := dial(t, tt.from, tt.to, tt.mark)
					s := acceptFrom(t, tt.at, conn)
					if tt.origDst {
						if got := originalDst(t, s); got != tt.to {
							t.Errorf("original destination = %s, want %s", got, tt.to)
						}
					}
				})
			}

			if err := inNS(t, pod, b.Remove); err != nil {
				t.Fatalf("Remove: %v", err)
			}
			acceptFrom(t, real80, dial(t, pod, ap(peer4, 80), 0))
			acceptFrom(t, real6, dial(t, pod, ap(peer6, 80), 0))
		})
	}
}
