package mesh

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/meshless/meshless/tests/harness"

	"github.com/meshless/meshless/internal/testbins"
	"github.com/meshless/meshless/internal/testenv"

	"github.com/meshless/meshless/daemon/cniapi"
	"github.com/meshless/meshless/internal/lab"
	"github.com/meshless/meshless/internal/nstest"
)

// The extra services this suite adds to the lab's registry (the lab's own
// default/web stays: VIP 198.18.100.10:80 to p1 of each node).
const (
	raceVIP      = "198.18.100.20" // n2/p1, n2/p2, n2/p3 (p3 drops SYNs)
	udsLocalVIP  = "198.18.100.21" // n1/p2, serves a unix socket
	udsRemoteVIP = "198.18.100.22" // n2/p2, serves a unix socket
	appPort      = 8080
)

// bins returns the project's bin dir and the reference plugins' dir.
func bins(t *testing.T) (string, string) {
	t.Helper()
	b := testbins.Get(t)
	return b.Dir, b.RefDir
}

// upLab builds a 2-node lab with 3 pods per node, adds this suite's
// services to its registry and waits until both daemons route them. The
// lab goes down when t ends.
func upLab(t *testing.T) *lab.Lab {
	t.Helper()
	nstest.RequireRoot(t)
	b, c := bins(t)
	name := fmt.Sprintf("mt%d", os.Getpid()%100000)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	l, err := lab.Up(ctx, lab.Options{Name: name, Nodes: 2, Pods: 3, BinDir: b, CNIBinDir: c, Log: logWriter{t}})
	if err != nil {
		t.Fatalf("lab up: %v", err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			for _, n := range l.Nodes() {
				if b, err := os.ReadFile(n.Log); err == nil {
					t.Logf("meshlessd %s log (tail):\n%s", n.Name, harness.Tail(string(b), 40))
				}
			}
		}
		if err := lab.Down(context.Background(), name, "", nil); err != nil {
			t.Errorf("lab down: %v", err)
		}
	})
	writeRegistry(t, l)
	return l
}

type logWriter struct{ t *testing.T }

func (w logWriter) Write(b []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(b), "\n"))
	return len(b), nil
}

func node(t *testing.T, l *lab.Lab, i int) lab.Node {
	t.Helper()
	n, err := l.Node(i)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// writeRegistry adds this suite's services to the lab's registry, then
// waits until every daemon's status lists them.
func writeRegistry(t *testing.T, l *lab.Lab) {
	t.Helper()
	svc := func(name, vip string, port int, refs ...string) lab.ServiceState {
		return lab.ServiceState{Name: name, VIP: vip, Port: port, TargetPort: appPort, Endpoints: refs}
	}
	if err := l.SetServices([]lab.ServiceState{
		svc("race", raceVIP, 80, "n2/p1", "n2/p2", "n2/p3"),
		svc("uds-local", udsLocalVIP, 80, "n1/p2"),
		svc("uds-remote", udsRemoteVIP, 80, "n2/p2"),
	}); err != nil {
		t.Fatal(err)
	}
	waitServices(t, l, 4)
}

// waitServices waits until every daemon routes n services and reports no
// discovery error.
func waitServices(t *testing.T, l *lab.Lab, n int) {
	t.Helper()
	for _, nd := range l.Nodes() {
		testenv.Eventually(t, 10*time.Second, func() error {
			st, err := cniapi.NewClient(nd.Socket).Status(context.Background())
			if err != nil {
				return err
			}
			if st.DiscoveryError != "" {
				return fmt.Errorf("%s: %s", nd.Name, st.DiscoveryError)
			}
			if len(st.Services) != n {
				return fmt.Errorf("%s routes %d services, want %d", nd.Name, len(st.Services), n)
			}
			return nil
		})
	}
}

// waitUpdated waits until every daemon's routing table changed after
// since (a registry change that keeps the number of services).
func waitUpdated(t *testing.T, l *lab.Lab, since time.Time) {
	t.Helper()
	for _, nd := range l.Nodes() {
		testenv.Eventually(t, 10*time.Second, func() error {
			st, err := cniapi.NewClient(nd.Socket).Status(context.Background())
			if err != nil {
				return err
			}
			if !st.RoutesUpdated.After(since) {
				return fmt.Errorf("%s: routes last updated %v, before %v", nd.Name, st.RoutesUpdated, since)
			}
			return nil
		})
	}
}

// metric reads one series of node i's daemon.
func metric(t *testing.T, l *lab.Lab, i int, series string) float64 {
	t.Helper()
	v, err := node(t, l, i).Metric(context.Background(), series)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func conns(dir, path string) string {
	return fmt.Sprintf(`meshless_connections_total{direction=%q,path=%q}`, dir, path)
}

// dialFrom connects from inside the pod ref to addr.
func dialFrom(l *lab.Lab, ref, addr string) (*net.TCPConn, error) {
	var c net.Conn
	err := l.InPod(ref, func() error {
		var err error
		c, err = net.DialTimeout("tcp4", addr, 5*time.Second)
		return err
	})
	if err != nil {
		return nil, err
	}
	return c.(*net.TCPConn), nil
}

func addr(ip netip.Addr, port int) string { return netip.AddrPortFrom(ip, uint16(port)).String() }
