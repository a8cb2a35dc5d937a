package race

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"

	"github.com/meshless/meshless/daemon/podnet"
	"github.com/meshless/meshless/internal/nstest"
	"github.com/meshless/meshless/internal/testenv"
)

// tally counts, per candidate, the dials launched and the results
// reported, across races.
type tally struct {
	mu       sync.Mutex
	launched map[netip.AddrPort]int
	first    map[netip.AddrPort]int // launched first in its race
	reported map[Result]int
}

func newTally() *tally {
	return &tally{launched: map[netip.AddrPort]int{}, first: map[netip.AddrPort]int{}, reported: map[Result]int{}}
}

func (t *tally) launch(a netip.AddrPort, first bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.launched[a]++
	if first {
		t.first[a]++
	}
}

func (t *tally) report(_ netip.AddrPort, r Result, _ error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.reported[r]++
}

// listenIn opens a loopback listener in n that accepts and closes.
func listenIn(t *testing.T, n *podnet.NS) netip.AddrPort {
	t.Helper()
	ln, err := n.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	return ln.Addr().(*net.TCPAddr).AddrPort()
}

// blackholed is an address blackhole makes SYNs to vanish.
var blackholed = netip.MustParseAddrPort("198.18.255.2:80")

// blackhole routes 198.18.255.0/24 into lo in netns: SYNs to it vanish.
func blackhole(netns ns.NetNS) error {
	return netns.Do(func(ns.NetNS) error {
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
}

// dropHalfSYNs drops, in netns, half the SYNs to port at random (as
// make bench's lossy instance).
func dropHalfSYNs(netns ns.NetNS, port uint16) error {
	script := fmt.Sprintf(`table inet racetest {
  chain in {
    type filter hook input priority -300; policy accept;
    tcp dport %d tcp flags & (syn | ack) == syn numgen random mod 2 == 0 drop
  }
}
`, port)
	cmd := exec.Command("nsenter", "--net="+netns.Path(), "nft", "-f", "-")
	cmd.Stdin = strings.NewReader(script)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("nft: %w: %s", err, out)
	}
	return nil
}

// TestLearnRealSockets: sequential races among two healthy loopback
// listeners and a third candidate, in a netns, with a History. The third
// candidate is given the best priority, so the old behaviours launch it in
// every race (all at once, or first in the fixed order); a learning race
// launches it rarely: when healthy it launches one dial per race, and a
// candidate whose SYNs vanish stalls one race, then sinks.
func TestLearnRealSockets(t *testing.T) {
	nstest.RequireRoot(t)
	const races = 40
	for _, tc := range []struct {
		name string
		// third sets up the third candidate in netns.
		third func(t *testing.T, netns ns.NetNS, n *podnet.NS) netip.AddrPort
		// maxThird bounds the races that launch the third candidate.
		maxThird int
	}{
		{"all healthy: one dial per race", func(t *testing.T, _ ns.NetNS, n *podnet.NS) netip.AddrPort {
			return listenIn(t, n)
		}, races},
		{"blackholed: tried once, then last", func(t *testing.T, netns ns.NetNS, _ *podnet.NS) netip.AddrPort {
			if err := blackhole(netns); err != nil {
				t.Fatal(err)
			}
			return blackholed
		}, 3},
		{"half its SYNs dropped: sinks at the first drop", func(t *testing.T, netns ns.NetNS, n *podnet.NS) netip.AddrPort {
			a := listenIn(t, n)
			if err := dropHalfSYNs(netns, a.Port()); err != nil {
				t.Fatal(err)
			}
			// Random drops: in 31 runs it was launched in 2 to 13 of
			// 40 races (median 3); the old behaviours launch it in all
			// 40, so half is the bound.
			return a
		}, races / 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			netns := nstest.New(t)
			n, err := podnet.Open(netns.Path())
			if err != nil {
				t.Fatal(err)
			}
			defer n.Close()
			third := tc.third(t, netns, n)
			cands := []netip.AddrPort{listenIn(t, n), listenIn(t, n), third}
			runLearning(t, n, cands, races, tc.maxThird)
		})
	}
}

// runLearning runs races sequential races among cands (the last one
// preferred by priority) with one History and checks what was launched.
func runLearning(t *testing.T, n *podnet.NS, cands []netip.AddrPort, races, maxThird int) {
	t.Helper()
	third := cands[len(cands)-1]
	tl := newTally()
	hist := NewHistory(HistoryConfig{})
	var took []time.Duration
	for r := range races {
		var once sync.Once
		dial := func(ctx context.Context, a netip.AddrPort) (*net.TCPConn, error) {
			first := false
			once.Do(func() { first = true })
			tl.launch(a, first)
			return n.Dial(ctx, "tcp4", a.String(), podnet.DialOptions{})
		}
		start := time.Now()
		conn, won, err := Dial(ctxT(t), cands, dial, Options[netip.AddrPort]{
			Learn:    hist,
			Key:      netip.AddrPort.String,
			Priority: func(a netip.AddrPort) int { return map[bool]int{true: 0, false: 1}[a == third] },
			Report:   tl.report,
		})
		if err != nil {
			t.Fatalf("race %d: %v", r, err)
		}
		took = append(took, time.Since(start))
		conn.Close()
		if won == third && third.Addr() == blackholed.Addr() {
			t.Errorf("race %d won by the blackhole", r)
		}
	}
	tl.mu.Lock()
	launches := 0
	for _, l := range tl.launched {
		launches += l
	}
	thirdLaunched := tl.launched[third]
	tl.mu.Unlock()
	slices.Sort(took)
	t.Logf("%d races, third %v: launched %v (first %v); race time p50 %v max %v", races, third, tl.launched, tl.first, took[races/2], took[races-1])
	// A healthy race costs one dial; a second only when the first took
	// longer than its attempt delay (a loaded machine): allow a tenth.
	// Racing all at once would launch 3 per race.
	// A race the impaired candidate stalls costs it and one more dial.
	extra := 0
	if maxThird < races {
		extra = 2 * thirdLaunched
	}
	if launches > races+races/10+extra {
		t.Errorf("%d dials for %d races", launches, races)
	}
	if thirdLaunched > maxThird {
		t.Errorf("impaired candidate launched in %d of %d races, want at most %d", thirdLaunched, races, maxThird)
	}
	// No race waited for a SYN retransmission (1 s).
	if took[races-1] > 900*time.Millisecond {
		t.Errorf("slowest race took %v", took[races-1])
	}
	// Every launched candidate is reported once, one winner per race.
	testenv.Eventually(t, 5*time.Second, func() error {
		tl.mu.Lock()
		defer tl.mu.Unlock()
		if got := tl.reported[Won] + tl.reported[Lost] + tl.reported[Failed]; got != launches || tl.reported[Won] != races {
			return fmt.Errorf("reported %v for %d launches", tl.reported, launches)
		}
		return nil
	})
}
