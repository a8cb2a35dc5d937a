package race

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"os"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"

	"github.com/meshless/meshless/daemon/podnet"
	"github.com/meshless/meshless/internal/nstest"
)

// TestBlackholeRealSockets races a real TCP dial to an address whose SYNs
// vanish (routed into lo in a private netns) against a healthy
// listener: the healthy one wins at once and the hanging connect is
// cancelled.
func TestBlackholeRealSockets(t *testing.T) {
	nstest.RequireRoot(t)
	netns := nstest.New(t)
	// Routed through lo, packets for a non-local address are dropped on
	// receive (no forwarding): the SYN vanishes, the connect hangs.
	err := netns.Do(func(ns.NetNS) error {
		lo, err := netlink.LinkByName("lo")
		if err != nil {
			return err
		}
		return netlink.RouteAdd(&netlink.Route{
			LinkIndex: lo.Attrs().Index,
			Dst:       &net.IPNet{IP: net.IPv4(198, 18, 255, 0).To4(), Mask: net.CIDRMask(24, 32)},
			Scope:     netlink.SCOPE_LINK,
		})
	})
	if err != nil {
		t.Fatalf("set up blackhole: %v", err)
	}
	n, err := podnet.Open(netns.Path())
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	ln, err := n.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		if c, err := ln.Accept(); err == nil {
			accepted <- c
		}
	}()
	healthy := ln.Addr().(*net.TCPAddr).AddrPort()
	blackhole := netip.MustParseAddrPort("198.18.255.2:80")

	// The blackhole alone really hangs: it is still connecting after 300ms.
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	_, err = n.Dial(ctx, "tcp4", blackhole.String(), podnet.DialOptions{})
	cancel()
	if err == nil || !errors.Is(err, os.ErrDeadlineExceeded) && !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("blackhole dial: %v, want a timeout", err)
	}

	rep := make(chan event, 4)
	start := time.Now()
	conn, won, err := Dial(ctxT(t), []netip.AddrPort{blackhole, healthy},
		func(ctx context.Context, a netip.AddrPort) (*net.TCPConn, error) {
			return n.Dial(ctx, "tcp4", a.String(), podnet.DialOptions{})
		},
		Options[netip.AddrPort]{
			// The blackhole is launched first.
			Priority: func(a netip.AddrPort) int {
				if a == blackhole {
					return 0
				}
				return 1
			},
			Report: func(a netip.AddrPort, r Result, err error) { rep <- event{a.String(), r, err} },
		})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if won != healthy {
		t.Fatalf("won %v", won)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("race took %v", d)
	}
	(<-accepted).Close()
	got := map[string]event{}
	for range 2 {
		select {
		case e := <-rep:
			got[e.name] = e
		case <-time.After(10 * time.Second):
			t.Fatalf("reports: %v", got)
		}
	}
	if got[healthy.String()].result != Won {
		t.Errorf("healthy: %v", got[healthy.String()])
	}
	if e := got[blackhole.String()]; e.result != Lost || !errors.Is(e.err, context.Canceled) {
		t.Errorf("blackhole: %+v, want lost by cancellation", e)
	}
}
