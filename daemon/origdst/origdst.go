// Package origdst reads the destination a redirected TCP connection was
// originally sent to, before an iptables/nftables REDIRECT rewrote it to the
// daemon's listener.
//
//	dst, err := origdst.Get(conn) // e.g. 10.96.0.10:80
package origdst

import (
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"unsafe"

	"golang.org/x/sys/unix"
)

// soOriginalDst is SO_ORIGINAL_DST (linux/netfilter_ipv4.h) and, with level
// SOL_IPV6, IP6T_SO_ORIGINAL_DST (linux/netfilter_ipv6/ip6_tables.h): both
// are 80. x/sys does not export them.
const soOriginalDst = 80

// Get returns the original destination of c, from the conntrack entry of the
// connection (so the netns that owns c must track connections, which any NAT
// rule ensures). For a connection that was not redirected it returns c's
// local address; callers compare to avoid dialling themselves.
func Get(c *net.TCPConn) (netip.AddrPort, error) {
	local, ok := c.LocalAddr().(*net.TCPAddr)
	if !ok {
		return netip.AddrPort{}, fmt.Errorf("original dst: no local address")
	}
	v4 := local.IP.To4() != nil
	rc, err := c.SyscallConn()
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("original dst: %w", err)
	}
	var (
		ap   netip.AddrPort
		gerr error
	)
	// Control neither blocks nor changes the socket, so the splice fast path
	// of later io.Copy calls on c is unaffected.
	err = rc.Control(func(fd uintptr) {
		if v4 {
			ap, gerr = get4(int(fd))
		} else {
			ap, gerr = get6(int(fd))
		}
	})
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("original dst: %w", err)
	}
	if gerr != nil {
		return netip.AddrPort{}, fmt.Errorf("original dst: %w", gerr)
	}
	return ap, nil
}

func getsockopt(fd, level int, buf []byte) error {
	size := uint32(len(buf))
	_, _, errno := unix.Syscall6(unix.SYS_GETSOCKOPT, uintptr(fd), uintptr(level), soOriginalDst,
		uintptr(unsafe.Pointer(&buf[0])), uintptr(unsafe.Pointer(&size)), 0)
	if errno != 0 {
		return errno
	}
	return nil
}

// get4 reads a struct sockaddr_in: family(2) port(2, network order) addr(4).
func get4(fd int) (netip.AddrPort, error) {
	var buf [unix.SizeofSockaddrInet4]byte
	if err := getsockopt(fd, unix.SOL_IP, buf[:]); err != nil {
		return netip.AddrPort{}, fmt.Errorf("getsockopt SO_ORIGINAL_DST: %w", err)
	}
	port := binary.BigEndian.Uint16(buf[2:4])
	addr := netip.AddrFrom4([4]byte(buf[4:8]))
	return netip.AddrPortFrom(addr, port), nil
}

// get6 reads a struct sockaddr_in6: family(2) port(2) flowinfo(4) addr(16)
// scope(4).
func get6(fd int) (netip.AddrPort, error) {
	var buf [unix.SizeofSockaddrInet6]byte
	if err := getsockopt(fd, unix.SOL_IPV6, buf[:]); err != nil {
		return netip.AddrPort{}, fmt.Errorf("getsockopt IP6T_SO_ORIGINAL_DST: %w", err)
	}
	port := binary.BigEndian.Uint16(buf[2:4])
	addr := netip.AddrFrom16([16]byte(buf[8:24]))
	return netip.AddrPortFrom(addr, port), nil
}
