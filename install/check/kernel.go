package check

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"runtime"
	"syscall"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/meshless/meshless/daemon/origdst"
	"github.com/meshless/meshless/daemon/relay"
	"github.com/meshless/meshless/internal/redirect"
	"github.com/meshless/meshless/internal/wellknown"
)

// Addresses inside the scratch netns (nothing leaves it): the probe's
// interface, the destination its redirected connection is sent to, and the
// foreign client address its transparent socket binds.
var (
	probeAddr    = netip.MustParsePrefix("198.18.255.1/30")
	probeDst     = netip.AddrPortFrom(netip.MustParseAddr("198.18.255.2"), 80)
	probeForeign = netip.MustParseAddr("198.18.254.9")
)

// probeResult is what one run of the scratch-netns probe found; each
// field is one report line.
type probeResult struct {
	netns, redirect, origDst, transparent Result
}

// kernelProbe runs probe once and shares its result between the kernel
// lines, so one scratch netns serves them all.
type kernelProbe struct {
	mode redirect.Mode
	done bool
	res  probeResult
}

func (k *kernelProbe) get(ctx context.Context) probeResult {
	if !k.done {
		k.res, k.done = probe(ctx, k.mode), true
	}
	return k.res
}

// probe does in a new network namespace what the plugin and the daemon do
// in a pod's: apply the redirect rules with the configured backend, accept
// a redirected connection on the outbound port and read its original
// destination, and connect from a marked IP_TRANSPARENT socket bound to a
// foreign address (the daemon's delivery), whose replies only come back
// through the rules' ip rule and conntrack mark restore.
func probe(ctx context.Context, mode redirect.Mode) probeResult {
	const needsNetns = "not run: the scratch network namespace failed"
	const needsRules = "not run: the redirect rules failed"
	r := probeResult{
		netns: fail("", needsNetns), redirect: skip(needsNetns),
		origDst: skip(needsNetns), transparent: skip(needsNetns),
	}
	// The backend detects the host's iptables flavor here, in the caller's
	// (the node's) netns, as the plugin does before entering a pod's.
	backend, err := redirect.New(mode)
	if err != nil {
		r.netns = skip("not run: no redirect backend")
		r.redirect = fail("set the conflist's \"redirect\" to auto, iptables or nftables", "backend %s: %v", mode, err)
		r.origDst, r.transparent = skip(needsRules), skip(needsRules)
		return r
	}
	done := make(chan probeResult, 1)
	go func() {
		defer func() { done <- r }()
		// The thread is never unlocked: it ends with this goroutine, and
		// the scratch netns with its last socket.
		runtime.LockOSThread()
		scratch, err := netns.New()
		if err != nil {
			r.netns = fail("run as root (CAP_SYS_ADMIN) on a kernel with CONFIG_NET_NS", "unshare(CLONE_NEWNET): %v", err)
			return
		}
		defer scratch.Close()
		r.netns = ok("scratch network namespace created")
		r.redirect, r.origDst, r.transparent = skip(needsRules), skip(needsRules), skip(needsRules)
		if err := wireScratch(); err != nil {
			r.redirect = fail("run as root (CAP_NET_ADMIN); the kernel needs the veth driver, which the primary CNI uses too", "wire scratch netns: %v", err)
			return
		}
		spec := redirect.DefaultSpec()
		spec.IPv4 = true
		if err := backend.Apply(spec); err != nil {
			r.redirect = fail(redirectFix(mode), "%s rules: %v", backend.Name(), err)
			return
		}
		r.redirect = ok("%s rules applied in a scratch netns (redirect %s)", backend.Name(), mode)
		r.origDst = checkOrigDst(ctx)
		r.transparent = checkTransparent(ctx)
	}()
	select {
	case res := <-done:
		return res
	case <-ctx.Done():
		return probeResult{
			netns:    fail("see the kernel log (dmesg)", "probe did not finish: %v", ctx.Err()),
			redirect: skip(needsNetns), origDst: skip(needsNetns), transparent: skip(needsNetns),
		}
	}
}

// redirectFix names what the backend needs from the node.
func redirectFix(mode redirect.Mode) string {
	switch mode {
	case redirect.ModeIPTables:
		return "install iptables (iptables-nft or iptables-legacy) and make sure the nat and mangle tables load (modules iptable_nat, xt_REDIRECT, xt_connmark)"
	case redirect.ModeNFTables:
		return "the kernel needs nf_tables with nft_nat, nft_redir and nft_ct (or set \"redirect\": \"iptables\")"
	}
	return "the kernel needs nf_tables (nft_nat, nft_redir, nft_ct) or iptables with the nat and mangle tables; see the plugin's \"redirect\" key"
}

// wireScratch brings up lo and a veth pair with the probe's address and a
// default route, like a pod's eth0: the rules let traffic on lo pass.
func wireScratch() error {
	lo, err := netlink.LinkByName("lo")
	if err != nil {
		return fmt.Errorf("lo: %w", err)
	}
	if err := netlink.LinkSetUp(lo); err != nil {
		return fmt.Errorf("lo up: %w", err)
	}
	veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "probe0"}, PeerName: "probe1"}
	if err := netlink.LinkAdd(veth); err != nil {
		return fmt.Errorf("add veth: %w", err)
	}
	addr := &netlink.Addr{IPNet: &net.IPNet{IP: probeAddr.Addr().AsSlice(), Mask: net.CIDRMask(probeAddr.Bits(), 32)}}
	for _, name := range []string{"probe1", "probe0"} {
		l, err := netlink.LinkByName(name)
		if err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		if name == "probe0" {
			if err := netlink.AddrAdd(l, addr); err != nil {
				return fmt.Errorf("address: %w", err)
			}
		}
		if err := netlink.LinkSetUp(l); err != nil {
			return fmt.Errorf("%s up: %w", name, err)
		}
		if name == "probe0" {
			if err := netlink.RouteAdd(&netlink.Route{LinkIndex: l.Attrs().Index, Dst: &net.IPNet{IP: net.IPv4zero, Mask: net.CIDRMask(0, 32)}, Scope: netlink.SCOPE_LINK}); err != nil {
				return fmt.Errorf("default route: %w", err)
			}
		}
	}
	return nil
}

// checkOrigDst connects to probeDst, which the rules redirect to the
// outbound listener, and reads the accepted connection's original
// destination as the daemon does (conntrack's SO_ORIGINAL_DST).
func checkOrigDst(ctx context.Context) Result {
	const fix = "the kernel needs conntrack (nf_conntrack) for SO_ORIGINAL_DST"
	ln, err := net.Listen("tcp4", fmt.Sprintf("127.0.0.1:%d", wellknown.OutboundPort))
	if err != nil {
		return fail(fix, "listen on the outbound port: %v", err)
	}
	defer ln.Close()
	d := net.Dialer{Timeout: 3 * time.Second}
	c, err := d.DialContext(ctx, "tcp4", probeDst.String())
	if err != nil {
		return fail(fix, "redirected connect to %s: %v", probeDst, err)
	}
	defer c.Close()
	srv, err := acceptWithin(ln, 3*time.Second)
	if err != nil {
		return fail(fix, "redirected connection never reached the outbound port: %v", err)
	}
	defer srv.Close()
	got, err := origdst.Get(srv.(*net.TCPConn))
	if err != nil {
		return fail(fix, "%v", err)
	}
	if got != probeDst {
		return fail(fix, "SO_ORIGINAL_DST gave %s, want %s", got, probeDst)
	}
	return ok("redirected connection to %s accepted on :%d, original destination read back", probeDst, wellknown.OutboundPort)
}

// checkTransparent connects to a listener of the scratch netns from a
// socket bound to a foreign address, marked and IP_TRANSPARENT as the
// daemon's deliveries are. The reply finds its way back only through the
// rules' conntrack mark and ip rule.
func checkTransparent(ctx context.Context) Result {
	const fix = "the daemon needs CAP_NET_ADMIN, IP_TRANSPARENT and policy routing (CONFIG_IP_MULTIPLE_TABLES), and conntrack marks"
	ln, err := net.Listen("tcp4", netip.AddrPortFrom(probeAddr.Addr(), 8080).String())
	if err != nil {
		return fail(fix, "listen: %v", err)
	}
	defer ln.Close()
	d := net.Dialer{
		Timeout:   3 * time.Second,
		LocalAddr: &net.TCPAddr{IP: probeForeign.AsSlice()},
		Control: func(_, _ string, rc syscall.RawConn) error {
			var serr error
			err := rc.Control(func(fd uintptr) {
				serr = errors.Join(
					unix.SetsockoptInt(int(fd), unix.SOL_IP, unix.IP_TRANSPARENT, 1),
					unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_MARK, int(wellknown.TransparentMark)))
			})
			return errors.Join(err, serr)
		},
	}
	c, err := d.DialContext(ctx, "tcp4", ln.Addr().String())
	if err != nil {
		return fail(fix, "connect from foreign %s: %v", probeForeign, err)
	}
	defer c.Close()
	srv, err := acceptWithin(ln, 3*time.Second)
	if err != nil {
		return fail(fix, "accept: %v", err)
	}
	defer srv.Close()
	if got := srv.RemoteAddr().(*net.TCPAddr).IP.String(); got != probeForeign.String() {
		return fail(fix, "server saw client %s, want %s", got, probeForeign)
	}
	return ok("marked IP_TRANSPARENT connection from %s delivered, replies routed back", probeForeign)
}

// acceptWithin accepts one connection or gives up after d.
func acceptWithin(ln net.Listener, d time.Duration) (net.Conn, error) {
	if err := ln.(*net.TCPListener).SetDeadline(time.Now().Add(d)); err != nil {
		return nil, fmt.Errorf("deadline: %w", err)
	}
	return ln.Accept()
}

// checkSockmap loads the daemon's experimental --sockmap program and maps.
// Informational: the daemon runs without it.
func checkSockmap(context.Context) Result {
	m, err := relay.LoadSockmap()
	if err != nil {
		return info("not available (only meshlessd --sockmap needs it): %v", err)
	}
	m.Close()
	return info("available (meshlessd --sockmap, experimental, may be used)")
}
