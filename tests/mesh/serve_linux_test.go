package mesh

import (
	"context"
	"errors"
	"io"
	"math"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/meshless/meshless/daemon/cniapi"
	"github.com/meshless/meshless/daemon/meshlet"
	"github.com/meshless/meshless/internal/lab"
)

// The Meshlet server side on the lab: Meshlet "srv" (pods n1/p2, version
// v1, and n2/p2, version v2) serves canary (both), limited (both, maxConn
// 2), limited-one (n2/p2 only, maxConn 1), idle-local (n1/p2) and
// idle-remote (n2/p2) (idleTimeout 600ms); the client n1/p3 joins Meshlet
// "cli", which declares them all.
const (
	canaryVIP     = "198.18.100.41"
	limitedVIP    = "198.18.100.42"
	limitedOneVIP = "198.18.100.43"
	idleLocalVIP  = "198.18.100.44"
	idleRemoteVIP = "198.18.100.45"
	idleTimeout   = 600 * time.Millisecond
)

// serveWorld sets the registry up for the server-side subtests, with
// canary weights v1/v2 (every service of srv: maxConn then spills over
// from a full version to the other), and restores the suite's registry
// when t ends.
func (s *meshSuite) serveWorld(t *testing.T, v1, v2 int) {
	l := s.l
	svc := func(name, vip string, refs ...string) lab.ServiceState {
		return lab.ServiceState{Name: name, VIP: vip, Port: 80, TargetPort: appPort, Endpoints: refs}
	}
	base := []lab.ServiceState{
		svc("race", raceVIP, "n2/p1", "n2/p2", "n2/p3"),
		svc("uds-local", udsLocalVIP, "n1/p2"),
		svc("uds-remote", udsRemoteVIP, "n2/p2"),
	}
	must(t, l.SetServices(append(base,
		svc("canary", canaryVIP, "n1/p2", "n2/p2"),
		svc("limited", limitedVIP, "n1/p2", "n2/p2"),
		svc("limited-one", limitedOneVIP, "n2/p2"),
		svc("idle-local", idleLocalVIP, "n1/p2"),
		svc("idle-remote", idleRemoteVIP, "n2/p2"),
	)))
	t.Cleanup(func() {
		must(t, l.SetMeshlets(nil))
		for _, ref := range []string{s.client, "n1/p2", "n2/p2"} {
			must(t, l.SetPodLabels(ref, nil))
		}
		must(t, l.SetServices(base))
		waitServices(t, l, 4)
	})
	must(t, l.SetPodLabels("n1/p2", map[string]string{meshlet.LabelMeshlet: "srv", meshlet.LabelVersion: "v1"}))
	must(t, l.SetPodLabels("n2/p2", map[string]string{meshlet.LabelMeshlet: "srv", meshlet.LabelVersion: "v2"}))
	must(t, l.SetPodLabels(s.client, map[string]string{meshlet.LabelMeshlet: "cli"}))
	srv := meshlet.Meshlet{Namespace: "default", Name: "srv", Spec: meshlet.Spec{Server: meshlet.Server{
		Services: []meshlet.Service{
			{Name: "canary"}, {Name: "limited", MaxConn: 2}, {Name: "limited-one", MaxConn: 1},
			{Name: "idle-local", IdleTimeout: idleTimeout.String()}, {Name: "idle-remote", IdleTimeout: idleTimeout.String()},
		},
		Canary: []meshlet.Canary{{Version: "v1", Weight: v1}, {Version: "v2", Weight: v2}},
	}}}
	cli := meshlet.Meshlet{Namespace: "default", Name: "cli"}
	for _, name := range []string{"canary", "limited", "limited-one", "idle-local", "idle-remote"} {
		cli.Spec.Client = append(cli.Spec.Client, meshlet.ClientRef{Meshlet: "srv", Service: name})
	}
	since := time.Now()
	must(t, l.SetMeshlets([]meshlet.Meshlet{srv, cli}))
	waitServices(t, l, 9)
	waitUpdated(t, l, since)
}

// testCanary: 2000 connections to the canary service split between the
// versions within a chi-square bound (p = 0.001: 10.83) for 90/10 and
// 99/1, and a weight of 0 gets nothing.
func (s *meshSuite) testCanary(t *testing.T) {
	for _, w := range []struct{ v1, v2 int }{{90, 10}, {99, 1}, {0, 100}} {
		s.serveWorld(t, w.v1, w.v2)
		dst := addr(mustAddr(canaryVIP), 80)
		// The weights reach the client's daemon with the registry: wait
		// until a connection gets through, then count.
		waitAllowed(t, s, dst)
		n1, n2 := s.app12.conns.Load(), s.app22.conns.Load()
		const n = 2000
		for i := range n {
			if _, _, err := exchange(t, s.l, s.client, dst, 10, uint64(i)); err != nil {
				t.Fatalf("%d/%d: connection %d: %v", w.v1, w.v2, i, err)
			}
		}
		o1, o2 := float64(s.app12.conns.Load()-n1), float64(s.app22.conns.Load()-n2)
		e1, e2 := n*float64(w.v1)/100, n*float64(w.v2)/100
		t.Logf("weights %d/%d: v1 %v, v2 %v of %d", w.v1, w.v2, o1, o2, n)
		if o1+o2 != n {
			t.Errorf("%v connections reached the versions, want %d", o1+o2, n)
		}
		if e1 == 0 || e2 == 0 {
			if (e1 == 0 && o1 != 0) || (e2 == 0 && o2 != 0) {
				t.Errorf("a version of weight 0 got connections: v1 %v, v2 %v", o1, o2)
			}
			continue
		}
		if chi := math.Pow(o1-e1, 2)/e1 + math.Pow(o2-e2, 2)/e2; chi > 10.83 {
			t.Errorf("%d/%d: chi-square %.2f > 10.83", w.v1, w.v2, chi)
		}
	}
}

// waitAllowed waits until the client reaches dst.
func waitAllowed(t *testing.T, s *meshSuite, dst string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, _, err := exchange(t, s.l, s.client, dst, 1, 0)
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s not reachable: %v", dst, err)
		}
		time.Sleep(50 * time.Millisecond) // polling interval
	}
}

// hold opens a connection from the client to dst and proves it reached
// an app; it stays open until t ends.
func (s *meshSuite) hold(t *testing.T, dst string) (*net.TCPConn, error) {
	c, err := dialFrom(s.l, s.client, dst)
	if err != nil {
		return nil, err
	}
	t.Cleanup(func() { c.Close() })
	// A refused connection is reset by the client's daemon; an admitted
	// one stays open: the app reads until EOF.
	c.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	_, err = c.Read(make([]byte, 1))
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		c.SetReadDeadline(time.Time{})
		return c, nil
	}
	return nil, errors.New("connection closed: refused")
}

// testMaxConn: maxConn 2 on each of two pods (one on the client's node,
// one across): four connections are admitted, two per pod (a full pod
// loses the race), the fifth is refused and counted as max_conn; on a
// service of one remote pod with maxConn 1, the second is refused.
func (s *meshSuite) testMaxConn(t *testing.T) {
	s.serveWorld(t, 50, 50)
	dst := addr(mustAddr(limitedVIP), 80)
	waitAllowed(t, s, dst)
	n1, n2 := s.app12.conns.Load(), s.app22.conns.Load()
	for i := range 4 {
		if _, err := s.hold(t, dst); err != nil {
			for _, n := range s.l.Nodes() {
				st, _ := cniapi.NewClient(n.Socket).Status(context.Background())
				t.Logf("%s: %+v", n.Name, st.Policies)
			}
			t.Fatalf("connection %d of 4: %v", i+1, err)
		}
	}
	if d1, d2 := s.app12.conns.Load()-n1, s.app22.conns.Load()-n2; d1 != 2 || d2 != 2 {
		t.Errorf("the pods got %d and %d connections, want 2 each", d1, d2)
	}
	full := metric(t, s.l, 1, `meshless_connection_failures_total{reason="max_conn"}`)
	if _, err := s.hold(t, dst); err == nil {
		t.Fatal("a fifth connection was admitted, both pods being at maxConn 2")
	}
	if d := metric(t, s.l, 1, `meshless_connection_failures_total{reason="max_conn"}`) - full; d != 1 {
		t.Errorf("the client's node counted %v max_conn, want 1", d)
	}
	one := addr(mustAddr(limitedOneVIP), 80)
	if _, err := s.hold(t, one); err != nil {
		t.Fatalf("first connection to limited-one: %v", err)
	}
	if _, err := s.hold(t, one); err == nil {
		t.Fatal("a second connection to a pod at maxConn 1 was admitted")
	}
}

// testIdleTimeout: an idle connection is closed within a tolerance of the
// service's idleTimeout, on the same node and across; one that keeps
// sending stays open past it.
func (s *meshSuite) testIdleTimeout(t *testing.T) {
	s.serveWorld(t, 50, 50)
	for ref, vip := range map[string]string{"n1/p2": idleLocalVIP, "n2/p2": idleRemoteVIP} {
		dst := addr(mustAddr(vip), 80)
		waitAllowed(t, s, dst)
		// The connection is idle from its first instant, and hold
		// itself spends 300 ms checking it is open: count from before
		// the dial, so the close is due idleTimeout later, never
		// sooner than the daemon's accept allows.
		start := time.Now()
		c, err := s.hold(t, dst)
		if err != nil {
			t.Fatal(err)
		}
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		io.ReadAll(c)
		if d := time.Since(start); d < idleTimeout-50*time.Millisecond || d > idleTimeout+time.Second {
			t.Errorf("%s: idle connection closed after %v, want about %v", ref, d, idleTimeout)
		}
		busy, err := s.hold(t, dst)
		if err != nil {
			t.Fatal(err)
		}
		for range 8 {
			if _, err := busy.Write([]byte("x")); err != nil {
				t.Fatalf("%s: an active connection was closed: %v", ref, err)
			}
			time.Sleep(idleTimeout / 4) // the pace of an active client, not a wait for state
		}
		busy.CloseWrite()
		busy.SetReadDeadline(time.Now().Add(5 * time.Second))
		if b, err := io.ReadAll(busy); err != nil || len(b) == 0 {
			t.Errorf("%s: active connection's answer %q, %v", ref, b, err)
		}
	}
}

// testRaceLocalFirst: the sample service web has an instance on the
// client's node (n1/p1) and one across (n2/p1). The race launches the
// local one first: one at a time in the fixed order (--race-fanout 1
// --race-stagger 0) it is always the one tried, never a tunnel first; with
// the learned stagger (the default) it takes nearly every connection, the
// remote one only after a local stall. Racing both at once
// (--race-stagger 0), the first to answer wins, which is not always the
// nearer one on a loaded node. Each setting's split and latency are logged
// (docs/daemon.md, "Racing", has the figures and what they mean).
func (s *meshSuite) testRaceLocalFirst(t *testing.T) {
	const n, size = 100, 64
	dst := addr(mustAddr(lab.ServiceVIP), lab.ServicePort)
	defer func() {
		if err := s.l.RestartDaemonWith(context.Background(), "n1", nil); err != nil {
			t.Fatal(err)
		}
		waitServices(t, s.l, 4)
	}()
	for _, flags := range []string{"--race-stagger auto", "--race-stagger 0", "--race-fanout 1 --race-stagger 0"} {
		if err := s.l.RestartDaemonWith(context.Background(), "n1", strings.Fields(flags)); err != nil {
			t.Fatal(err)
		}
		waitServices(t, s.l, 4)
		b11, b21 := s.app11.bytes.Load(), s.app21.bytes.Load()
		var lat []time.Duration
		for i := range n {
			start := time.Now()
			if _, _, err := exchange(t, s.l, s.client, dst, size, uint64(i)); err != nil {
				t.Fatalf("%s: connection %d: %v", flags, i, err)
			}
			lat = append(lat, time.Since(start))
		}
		// A race's loser never gets application bytes: bytes say who won.
		local, remote := (s.app11.bytes.Load()-b11)/size, (s.app21.bytes.Load()-b21)/size
		slices.Sort(lat)
		t.Logf("%s: local %d, remote %d of %d; exchange p50 %v p90 %v", flags, local, remote, n, lat[n/2], lat[n*9/10])
		if local+remote != n {
			t.Errorf("%s: %d connections reached an app, want %d", flags, local+remote, n)
		}
		switch {
		case strings.Contains(flags, "fanout 1") && local != n:
			t.Errorf("%s: the local instance took %d of %d, want all: it is tried first", flags, local, n)
		case strings.Contains(flags, "auto") && local < n*3/4:
			t.Errorf("%s: the local instance took %d of %d, want nearly all: it connects sooner", flags, local, n)
		}
	}
}
