package proxy

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/meshless/meshless/daemon/meshlet"
	"github.com/meshless/meshless/daemon/routes"
	"github.com/meshless/meshless/internal/podtest"
	"github.com/meshless/meshless/internal/testenv"
)

// TestMaxConnRace: service web of Meshlet srv, served by B (n1, podA's
// node) and C (n2) with maxConn 1: the first connection takes B, the
// second finds B full and takes C (the race's other candidate), the third
// is refused; the races' losers hold no slot once the race is over.
func TestMaxConnRace(t *testing.T) {
	ms := newMesh(t, options{})
	listenIn(t, ms.podB, ipB+":8080")
	listenIn(t, ms.podC, ipC+":8080")
	m := ms.model
	m.Services = m.Services[:0]
	m.Services = append(m.Services, svc("web", vipWeb, routes.Endpoint{IP: ap(ipB), Node: "n1"}, routes.Endpoint{IP: ap(ipC), Node: "n2"}))
	wl := func(name, ip, node, ml string) meshlet.Workload {
		return meshlet.Workload{Namespace: "default", Name: name, IPs: []netip.Addr{ap(ip)}, Node: node,
			ServiceAccount: name, Labels: map[string]string{meshlet.LabelMeshlet: ml}}
	}
	m.Workloads = []meshlet.Workload{wl("pod-a", ipA, "n1", "cli"), wl("pod-b", ipB, "n1", "srv"), wl("pod-c", ipC, "n2", "srv")}
	m.Meshlets = []meshlet.Meshlet{
		{Namespace: "default", Name: "cli", Spec: meshlet.Spec{Client: []meshlet.ClientRef{{Meshlet: "srv", Service: "web"}}}},
		{Namespace: "default", Name: "srv", Spec: meshlet.Spec{Server: meshlet.Server{Services: []meshlet.Service{{Name: "web", MaxConn: 1}}}}},
	}
	ms.setModel(t, m)
	inUse := func() (int, int) {
		return ms.n1.h.cfg.Decider.InUse("default/pod-b", "web"), ms.n2.h.cfg.Decider.InUse("default/pod-c", "web")
	}
	hold := func() error {
		c, err := podtest.Dial(ms.podA, "tcp4", vipWeb+":80")
		if err != nil {
			return err
		}
		t.Cleanup(func() { c.Close() })
		c.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
		_, err = c.Read(make([]byte, 1))
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			return nil
		}
		return fmt.Errorf("closed: %v", err)
	}
	for i, want := range [][2]int{{1, 0}, {1, 1}} {
		if err := hold(); err != nil {
			t.Fatalf("connection %d: %v", i+1, err)
		}
		b0, c0 := inUse()
		t.Logf("right after connection %d: B %d, C %d", i+1, b0, c0)
		start := time.Now()
		defer func() { t.Logf("settled after %v", time.Since(start)) }()
		testenv.Eventually(t, 5*time.Second, func() error {
			if b, c := inUse(); b != want[0] || c != want[1] {
				return fmt.Errorf("after connection %d: B %d, C %d in use, want %v", i+1, b, c, want)
			}
			return nil
		})
	}
	if err := hold(); err == nil {
		t.Fatal("a third connection was admitted, both pods at maxConn 1")
	}
}
