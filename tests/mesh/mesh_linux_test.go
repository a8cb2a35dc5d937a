package mesh

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"os/exec"
	"strconv"
	"testing"
	"time"

	"github.com/meshless/meshless/daemon/identity"
	"github.com/meshless/meshless/tests/harness"

	"github.com/meshless/meshless/internal/lab"
	"github.com/meshless/meshless/internal/testenv"
)

// meshSuite is the lab TestMesh runs on: the client pod every subtest
// connects from, and the apps whose counters the subtests read.
type meshSuite struct {
	l      *lab.Lab
	client string // the client pod, on n1
	cip    string // its IP, as the apps see the peer
	// The apps on n1/p1, n1/p2 and n2/p1..p3.
	app11, app12, app21, app22, app23 *app
}

// TestMesh runs the suite on one lab: the subtests run in order and each
// measures the metrics it changes.
func TestMesh(t *testing.T) {
	s := newMeshSuite(t)
	t.Run("same node", s.testSameNode)
	t.Run("cross node", s.testCrossNode)
	t.Run("service VIP", s.testServiceVIP)
	t.Run("passthrough", s.testPassthrough)
	t.Run("half-close", s.testHalfClose)
	t.Run("uds", s.testUDS)
	t.Run("race", s.testRace)
	t.Run("race prefers this node", s.testRaceLocalFirst)
	t.Run("100MB", s.test100MB)
	t.Run("plaintext and malformed tunnels", s.testMalformedTunnelHeaders)
	t.Run("access control", s.testAccessControl)
	t.Run("no application byte in the clear", s.testNoClearText)
	t.Run("canary weights", s.testCanary)
	t.Run("maxConn", s.testMaxConn)
	t.Run("idleTimeout", s.testIdleTimeout)
	t.Run("native API", s.testNative)
	t.Run("daemon restart", s.testDaemonRestart)
}

// newMeshSuite brings the lab up with an app on every pod but the client.
func newMeshSuite(t *testing.T) *meshSuite {
	l := upLab(t)
	s := &meshSuite{l: l, client: "n1/p3"}
	s.cip = harness.LabPod(t, l, s.client).IP.String()

	s.app11 = listenPod(t, l, "n1/p1", appPort)
	s.app21 = listenPod(t, l, "n2/p1", appPort)
	s.app22 = listenPod(t, l, "n2/p2", appPort)
	s.app23 = listenPod(t, l, "n2/p3", appPort)
	s.app12 = listenPod(t, l, "n1/p2", appPort)
	return s
}

// podAddr is the app's address in pod ref.
func (s *meshSuite) podAddr(t *testing.T, ref string) string {
	t.Helper()
	return addr(harness.LabPod(t, s.l, ref).IP, appPort)
}

// delta returns the outbound metric deltas on n1 around fn.
func (s *meshSuite) delta(t *testing.T, fn func()) map[string]float64 {
	paths := []string{"local", "uds", "remote", "passthrough"}
	before := map[string]float64{}
	for _, p := range paths {
		before[p] = metric(t, s.l, 1, conns("outbound", p))
	}
	fn()
	d := map[string]float64{}
	for _, p := range paths {
		d[p] = metric(t, s.l, 1, conns("outbound", p)) - before[p]
	}
	return d
}

// expectPath checks that the deltas d count one connection on path and
// none on the others.
func expectPath(t *testing.T, d map[string]float64, path string) {
	t.Helper()
	for p, v := range d {
		want := 0.0
		if p == path {
			want = 1
		}
		if v != want {
			t.Errorf("outbound %s connections +%v, want +%v (all: %v)", p, v, want, d)
		}
	}
}

func (s *meshSuite) testSameNode(t *testing.T) {
	d := s.delta(t, func() { check(t, s.l, s.client, s.podAddr(t, "n1/p1"), s.cip, 1000) })
	expectPath(t, d, "local")
}

func (s *meshSuite) testCrossNode(t *testing.T) {
	in := metric(t, s.l, 2, conns("inbound", "remote"))
	d := s.delta(t, func() { check(t, s.l, s.client, s.podAddr(t, "n2/p1"), s.cip, 1000) })
	expectPath(t, d, "remote")
	if got := metric(t, s.l, 2, conns("inbound", "remote")) - in; got != 1 {
		t.Errorf("n2 inbound remote +%v, want +1", got)
	}
}

func (s *meshSuite) testServiceVIP(t *testing.T) {
	d := s.delta(t, func() { check(t, s.l, s.client, fmt.Sprintf("%s:%d", lab.ServiceVIP, lab.ServicePort), s.cip, 1000) })
	if d["local"]+d["remote"] != 1 || d["uds"]+d["passthrough"] != 0 {
		t.Errorf("service connection counted %v, want one local or remote", d)
	}
}

// testPassthrough connects to a listener on n2's own address, outside the
// mesh: the daemon passes it through.
func (s *meshSuite) testPassthrough(t *testing.T) {
	n2 := node(t, s.l, 2)
	var ln net.Listener
	if err := n2.Do(func() error {
		var err error
		ln, err = net.Listen("tcp4", addr(n2.Address, 9000))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	serveApp(t, ln)
	d := s.delta(t, func() { check(t, s.l, s.client, addr(n2.Address, 9000), s.cip, 1000) })
	expectPath(t, d, "passthrough")
}

// testHalfClose: the client shuts its write side and still reads the
// reply, cross-node and same-node.
func (s *meshSuite) testHalfClose(t *testing.T) {
	for _, dst := range []string{"n1/p1", "n2/p1"} {
		c, err := dialFrom(s.l, s.client, s.podAddr(t, dst))
		if err != nil {
			t.Fatal(err)
		}
		c.SetDeadline(time.Now().Add(10 * time.Second))
		io.WriteString(c, "ping")
		if err := c.CloseWrite(); err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(c)
		c.Close()
		if err != nil {
			t.Fatalf("%s: read after shutdown: %v", dst, err)
		}
		if want := s.cip + " 4 "; len(b) < len(want) || string(b[:len(want)]) != want {
			t.Errorf("%s: answer %q after half-close", dst, b)
		}
	}
}

// testUDS connects to the unix-socket services, on n1 and on n2: they
// reach the pods' unix sockets, not their TCP listeners.
func (s *meshSuite) testUDS(t *testing.T) {
	udsLocal := listenUnix(t, s.l, "n1/p2", "uds-local")
	udsRemote := listenUnix(t, s.l, "n2/p2", "uds-remote")
	tcp12, tcp22 := s.app12.conns.Load(), s.app22.conns.Load()
	d := s.delta(t, func() { check(t, s.l, s.client, udsLocalVIP+":80", "unix", 5000) })
	expectPath(t, d, "uds")
	in := metric(t, s.l, 2, conns("inbound", "uds"))
	d = s.delta(t, func() { check(t, s.l, s.client, udsRemoteVIP+":80", "unix", 5000) })
	expectPath(t, d, "remote")
	if got := metric(t, s.l, 2, conns("inbound", "uds")) - in; got != 1 {
		t.Errorf("n2 inbound uds +%v, want +1", got)
	}
	if udsLocal.conns.Load() != 1 || udsRemote.conns.Load() != 1 {
		t.Errorf("unix sockets got %d and %d connections, want 1 each", udsLocal.conns.Load(), udsRemote.conns.Load())
	}
	if s.app12.conns.Load() != tcp12 || s.app22.conns.Load() != tcp22 {
		t.Error("the pods' TCP listeners got connections meant for their unix sockets")
	}
}

// testRace connects through the race service while one of its endpoints
// drops every SYN: each connection must still be quick, won by another
// endpoint, and its bytes delivered to exactly one. The daemon learns: the
// dropping endpoint stalls a race or two, then is tried last, so few
// races launch it (racing all at once launched it in every race).
func (s *meshSuite) testRace(t *testing.T) {
	l := s.l
	// n2/p3 drops every SYN to its app.
	drop := []string{"INPUT", "-p", "tcp", "--syn", "--dport", strconv.Itoa(appPort), "-j", "DROP"}
	iptables(t, l, "n2/p3", append([]string{"-I"}, drop...)...)
	t.Cleanup(func() { iptables(t, l, "n2/p3", append([]string{"-D"}, drop...)...) })
	lost := metric(t, l, 1, `meshless_race_total{result="lost"}`)
	won := metric(t, l, 1, `meshless_race_total{result="won"}`)
	b21, b22 := s.app21.bytes.Load(), s.app22.bytes.Load()
	const n, size = 30, 10000
	for i := range n {
		start := time.Now()
		check(t, l, s.client, raceVIP+":80", s.cip, size)
		if d := time.Since(start); d > 700*time.Millisecond {
			t.Errorf("connection %d took %v", i, d)
		}
	}
	if got := metric(t, l, 1, `meshless_race_total{result="won"}`) - won; got != n {
		t.Errorf("races won +%v, want +%d", got, n)
	}
	// Losers are reported as they are reaped: the dropping endpoint in
	// the race or two it stalled, and a healthy one when a loaded machine
	// made it miss its attempt delay; never one per race.
	if got := metric(t, l, 1, `meshless_race_total{result="lost"}`) - lost; got > n/3 {
		t.Errorf("races lost +%v in %d races: the stalled endpoint is still tried", got, n)
	}
	if c := s.app23.conns.Load(); c != 0 {
		t.Errorf("the SYN-dropping endpoint accepted %d connections", c)
	}
	// Every byte reached exactly one winner: losers got none.
	if got := s.app21.bytes.Load() - b21 + s.app22.bytes.Load() - b22; got != n*size {
		t.Errorf("endpoints received %d bytes, want exactly %d", got, n*size)
	}
}

func (s *meshSuite) test100MB(t *testing.T) {
	const size = 100 << 20
	check(t, s.l, s.client, s.podAddr(t, "n1/p1"), s.cip, size)
	check(t, s.l, s.client, s.podAddr(t, "n2/p1"), s.cip, size)
}

// testMalformedTunnelHeaders sends n2's tunnel port a non-tunnel request
// and an over-long header: the daemon closes both, counts them, and still
// serves.
func (s *meshSuite) testMalformedTunnelHeaders(t *testing.T) {
	l := s.l
	n1, n2 := node(t, l, 1), node(t, l, 2)
	tun := addr(n2.Address, 15008)
	failures := func(reason string) float64 {
		return metric(t, l, 2, `meshless_connection_failures_total{reason="`+reason+`"}`)
	}
	plain, bad, long := failures("tls_plaintext"), failures("bad_magic"), failures("header_too_long")
	// Plaintext (an HTTP request, a version 1 header) never gets past the
	// TLS handshake.
	for _, send := range [][]byte{[]byte("GET / HTTP/1.1\r\n\r\n"), []byte("MLTN\x01\x00\xff\xff" + string(make([]byte, 2000)))} {
		sendTunnel(t, n1, tun, nil, send)
	}
	// Inside n1's authenticated TLS, bad headers are refused one by one.
	src, err := identity.NewSource(identity.Options{Node: n1.Name, Dir: n1.TLSDir})
	if err != nil {
		t.Fatal(err)
	}
	cfg := src.ClientConfig(n2.Name)
	for _, send := range [][]byte{[]byte("GET / HTTP/1.1\r\n\r\n"), []byte("MLTN\x02\x00\xff\xff" + string(make([]byte, 2000)))} {
		sendTunnel(t, n1, tun, cfg, send)
	}
	testenv.Eventually(t, 5*time.Second, func() error {
		if failures("tls_plaintext")-plain < 2 || failures("bad_magic")-bad < 1 || failures("header_too_long")-long < 1 {
			return errors.New("bad tunnels not counted")
		}
		return nil
	})
	// Still up and serving.
	check(t, l, s.client, s.podAddr(t, "n2/p1"), s.cip, 1000)
}

// sendTunnel sends send to the tunnel at tun from n's netns, in TLS with
// cfg when it is not nil, and reads until the daemon closes.
func sendTunnel(t *testing.T, n lab.Node, tun string, cfg *tls.Config, send []byte) {
	t.Helper()
	err := n.Do(func() error {
		c, err := net.DialTimeout("tcp4", tun, 5*time.Second)
		if err != nil {
			return err
		}
		if cfg != nil {
			c = tls.Client(c, cfg)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(10 * time.Second))
		c.Write(send)
		_, err = io.ReadAll(c) // the daemon closes it
		var ne net.Error
		if err != nil && errors.As(err, &ne) && ne.Timeout() {
			return fmt.Errorf("daemon did not close a bad tunnel: %w", err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// testDaemonRestart kills n1's daemon and starts a new one, which must
// serve the pods it restored from its state and count afresh.
func (s *meshSuite) testDaemonRestart(t *testing.T) {
	l := s.l
	if err := l.KillDaemon("n1"); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := l.RestartDaemon(ctx, "n1"); err != nil {
		t.Fatal(err)
	}
	// The new daemon restored the pods from its state: no CNI ADD.
	testenv.Eventually(t, 10*time.Second, func() error {
		_, _, err := exchange(t, l, s.client, s.podAddr(t, "n1/p1"), 10, 1)
		return err
	})
	check(t, l, s.client, s.podAddr(t, "n2/p1"), s.cip, 1000)
	if v := metric(t, l, 1, conns("outbound", "local")); v < 1 {
		t.Errorf("new daemon counted %v local connections", v)
	}
	if v := metric(t, l, 1, conns("outbound", "remote")); v != 1 {
		t.Errorf("new daemon counted %v remote connections, want 1", v)
	}
}

// iptables runs iptables inside the pod's netns.
func iptables(t *testing.T, l *lab.Lab, ref string, args ...string) {
	t.Helper()
	var out bytes.Buffer
	cmd := exec.Command("iptables", append([]string{"-w"}, args...)...)
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := l.Run(ref, cmd); err != nil {
		t.Fatalf("iptables %v in %s: %v\n%s", args, ref, err, out.String())
	}
}
