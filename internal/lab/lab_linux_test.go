package lab

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/meshless/meshless/daemon/cniapi"
	"github.com/meshless/meshless/internal/nstest"
	"github.com/meshless/meshless/internal/wellknown"
)

// testName returns a lab prefix unique to this test process.
func testName(base string) string { return fmt.Sprintf("%s%d", base, os.Getpid()%100000) }

// logWriter sends the lab's progress lines to t.Log.
type logWriter struct{ t *testing.T }

func (w logWriter) Write(b []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(b), "\n"))
	return len(b), nil
}

// upLab builds a lab that is torn down when t ends.
func upLab(t *testing.T, name string, nodes, pods int) *Lab {
	t.Helper()
	nstest.RequireRoot(t)
	binDir, cniDir := testBins(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	l, err := Up(ctx, Options{Name: name, Nodes: nodes, Pods: pods, BinDir: binDir, CNIBinDir: cniDir, Log: logWriter{t}})
	if err != nil {
		t.Fatalf("Up: %v", err)
	}
	t.Cleanup(func() {
		dumpLogs(t, l)
		if err := Down(context.Background(), name, "", nil); err != nil {
			t.Errorf("cleanup Down: %v", err)
		}
	})
	return l
}

// dumpLogs logs the tail of every daemon's log if t failed.
func dumpLogs(t *testing.T, l *Lab) {
	if !t.Failed() {
		return
	}
	for _, n := range l.Nodes() {
		if fileExists(n.Log) {
			t.Logf("meshlessd %s log:\n%s", n.Name, tailFile(n.Log, 30))
		}
	}
}

// assertGone checks that nothing of lab name is left: no netns, no lab
// folder, none of pids running.
func assertGone(t *testing.T, name string, pids []int) {
	t.Helper()
	if left, err := labNetns(name); err != nil || len(left) > 0 {
		t.Errorf("netns left: %v (%v)", left, err)
	}
	if fileExists(labDir(DefaultRoot, name)) {
		t.Errorf("lab dir %s left", labDir(DefaultRoot, name))
	}
	for _, pid := range pids {
		if pid > 0 && pidAlive(pid) {
			t.Errorf("process %d still running", pid)
		}
	}
}

func daemonPIDs(l *Lab) []int {
	var pids []int
	for _, n := range l.Nodes() {
		pids = append(pids, n.PID)
	}
	return pids
}

// serve listens on port inside pod ref and answers every connection with
// one line naming the pod and the peer's address.
func serve(t *testing.T, l *Lab, ref string, port int) {
	t.Helper()
	var ln net.Listener
	err := l.InPod(ref, func() error {
		var err error
		ln, err = net.Listen("tcp4", fmt.Sprintf(":%d", port))
		return err
	})
	if err != nil {
		t.Fatalf("listen in %s: %v", ref, err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			fmt.Fprintf(c, "%s saw %s\n", ref, c.RemoteAddr())
			c.Close()
		}
	}()
}

// dial connects from pod ref to addr and returns the server's line. With
// bypass the socket carries the mesh's skip mark, so the pod's redirect
// rules let it through: plain routing over bridge, underlay and host-gw.
func dial(l *Lab, ref, addr string, bypass bool) (string, error) {
	var c net.Conn
	err := l.InPod(ref, func() error {
		d := net.Dialer{Timeout: 5 * time.Second}
		if bypass {
			d.Control = func(_, _ string, rc syscall.RawConn) error {
				var serr error
				err := rc.Control(func(fd uintptr) {
					serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_MARK, int(wellknown.SkipMark))
				})
				return errors.Join(err, serr)
			}
		}
		var err error
		c, err = d.Dial("tcp4", addr)
		return err
	})
	if err != nil {
		return "", err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	line, err := bufio.NewReader(c).ReadString('\n')
	return strings.TrimSpace(line), err
}

// TestLab brings up one lab of two nodes with two pods each and checks it
// phase by phase; the phases share the lab because Up takes seconds.
func TestLab(t *testing.T) {
	name := testName("lt")
	l := upLab(t, name, 2, 2)
	ctx := context.Background()
	pids := daemonPIDs(l)

	t.Run("nothing in the host netns", testNothingInHostNetns)
	t.Run("pods have IPs and are registered", func(t *testing.T) { testPodsRegistered(ctx, t, l) })
	t.Run("redirect rules present", func(t *testing.T) { testRedirectRules(t, l) })
	testTCPPaths(t, l)
	t.Run("status", func(t *testing.T) { testStatus(ctx, t, l, name) })
	t.Run("exec", func(t *testing.T) { testExec(ctx, t, l, name) })
	t.Run("metrics and restart", func(t *testing.T) {
		// The restarted daemon must be gone after down too.
		pids = append(pids, testMetricsAndRestart(ctx, t, l))
	})

	dumpLogs(t, l)
	checkDown(ctx, t, name, pids)
}

// testNothingInHostNetns checks that the lab left no address, route or
// bridge of its range in the host's netns: the lab lives in its own.
func testNothingInHostNetns(t *testing.T) {
	lab := netip.MustParsePrefix("198.18.0.0/15")
	addrs, err := netlink.AddrList(nil, netlink.FAMILY_V4)
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range addrs {
		if ip, _ := netip.AddrFromSlice(a.IP.To4()); lab.Contains(ip) {
			t.Errorf("host netns has lab address %s", a.IPNet)
		}
	}
	routes, err := netlink.RouteList(nil, netlink.FAMILY_V4)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range routes {
		if r.Dst == nil {
			continue
		}
		if ip, _ := netip.AddrFromSlice(r.Dst.IP.To4()); lab.Contains(ip) {
			t.Errorf("host netns has lab route %s", r.Dst)
		}
	}
	if _, err := netlink.LinkByName(underlayBridge); err == nil {
		t.Errorf("host netns has the underlay bridge %s", underlayBridge)
	}
}

// testPodsRegistered checks that each pod has an IP of its node's pod CIDR
// and that each daemon has its node's two pods registered.
func testPodsRegistered(ctx context.Context, t *testing.T, l *Lab) {
	pods := l.Pods()
	if len(pods) != 4 {
		t.Fatalf("pods = %+v", pods)
	}
	for _, p := range pods {
		n, _ := l.Node(int(p.Node[1] - '0'))
		if !n.PodCIDR.Contains(p.IP) {
			t.Errorf("pod %s ip %s not in %s", p.Ref, p.IP, n.PodCIDR)
		}
	}
	for _, n := range l.Nodes() {
		regs, err := cniapi.NewClient(n.Socket).List(ctx)
		if err != nil {
			t.Fatalf("list pods of %s: %v", n.Name, err)
		}
		if len(regs) != 2 {
			t.Errorf("daemon %s has %d pods, want 2: %+v", n.Name, len(regs), regs)
		}
	}
}

// testRedirectRules checks that a pod's netns redirects to the daemon's
// outbound (15001) and inbound (15006) ports.
func testRedirectRules(t *testing.T, l *Lab) {
	var out bytes.Buffer
	cmd := exec.Command("sh", "-c", "nft list ruleset 2>/dev/null; iptables-save 2>/dev/null")
	cmd.Stdout = &out
	if err := l.Run("n2/p2", cmd); err != nil {
		t.Fatalf("list rules: %v", err)
	}
	if !strings.Contains(out.String(), "15001") || !strings.Contains(out.String(), "15006") {
		t.Errorf("no redirect to 15001/15006 in pod n2/p2:\n%s", out.String())
	}
}

// testTCPPaths connects pod to pod, routed (bypassing the mesh) and
// through the daemons, one subtest per path.
func testTCPPaths(t *testing.T, l *Lab) {
	serve(t, l, "n1/p2", 9090)
	serve(t, l, "n2/p2", 9090)
	for _, tc := range []struct {
		from, to string
		bypass   bool
	}{
		{"n1/p1", "n1/p2", true},  // same node, bridge
		{"n1/p1", "n2/p2", true},  // cross node, host-gw
		{"n2/p1", "n1/p2", true},  // and back
		{"n1/p1", "n1/p2", false}, // same node, through meshlessd
		{"n1/p1", "n2/p2", false}, // cross node, through both daemons
	} {
		path := "mesh"
		if tc.bypass {
			path = "routed"
		}
		t.Run(fmt.Sprintf("tcp %s %s to %s", path, tc.from, tc.to), func(t *testing.T) {
			to, _ := l.Pod(tc.to)
			got, err := dial(l, tc.from, net.JoinHostPort(to.IP.String(), "9090"), tc.bypass)
			if err != nil {
				t.Fatalf("dial: %v", err)
			}
			if !strings.HasPrefix(got, tc.to+" saw ") {
				t.Errorf("answer %q, want one from %s", got, tc.to)
			}
		})
	}
}

// testStatus checks that `status` lists every pod and both daemons ready.
func testStatus(ctx context.Context, t *testing.T, l *Lab, name string) {
	var out, errOut bytes.Buffer
	if err := Main(ctx, []string{"status", "--name", name}, &out, &errOut); err != nil {
		t.Fatalf("status: %v\n%s%s", err, out.String(), errOut.String())
	}
	for _, p := range l.Pods() {
		if !strings.Contains(out.String(), p.Ref) || !strings.Contains(out.String(), p.IP.String()) {
			t.Errorf("status lacks %s %s:\n%s", p.Ref, p.IP, out.String())
		}
	}
	if strings.Count(out.String(), " ready") != 2 {
		t.Errorf("status should show 2 ready daemons:\n%s", out.String())
	}
}

// testExec checks that `exec` runs in the pod's netns and passes the
// command's exit code on.
func testExec(ctx context.Context, t *testing.T, l *Lab, name string) {
	var out, errOut bytes.Buffer
	err := Main(ctx, []string{"exec", "--name", name, "n1/p2", "--", "ip", "-4", "-o", "addr", "show", "dev", "eth0"}, &out, &errOut)
	p, _ := l.Pod("n1/p2")
	if err != nil || !strings.Contains(out.String(), p.IP.String()+"/24") {
		t.Errorf("exec ip addr: %v, out %q, err %q", err, out.String(), errOut.String())
	}
	var ee *ExitError
	err = Main(ctx, []string{"exec", "--name", name, "n1/p2", "--", "sh", "-c", "exit 3"}, &out, &errOut)
	if !errors.As(err, &ee) || ee.Code != 3 {
		t.Errorf("exec exit 3: %v", err)
	}
}

// testMetricsAndRestart reads n1's metrics, restarts its daemon and checks
// that a new process took over with the pods; it returns the new PID.
func testMetricsAndRestart(ctx context.Context, t *testing.T, l *Lab) int {
	n1, _ := l.Node(1)
	m, err := n1.Metrics(ctx)
	if err != nil || !strings.Contains(m, "meshless_pods") {
		t.Fatalf("metrics: %v\n%.500s", err, m)
	}
	if err := l.RestartDaemon(ctx, "n1"); err != nil {
		t.Fatalf("restart: %v", err)
	}
	after, _ := l.Node(1)
	if after.PID == n1.PID || pidAlive(n1.PID) {
		t.Errorf("pid %d -> %d; old alive %v", n1.PID, after.PID, pidAlive(n1.PID))
	}
	regs, err := cniapi.NewClient(after.Socket).List(ctx)
	if err != nil || len(regs) != 2 {
		t.Errorf("restarted daemon's pods: %d, %v", len(regs), err)
	}
	return after.PID
}

// checkDown runs `down`, checks that nothing of the lab is left (pids
// included), and that a second `down` is a no-op.
func checkDown(ctx context.Context, t *testing.T, name string, pids []int) {
	t.Helper()
	var out bytes.Buffer
	if err := Main(ctx, []string{"down", "--name", name}, &out, &out); err != nil {
		t.Fatalf("down: %v\n%s", err, out.String())
	}
	t.Logf("down:\n%s", out.String())
	assertGone(t, name, pids)
	out.Reset()
	if err := Main(ctx, []string{"down", "--name", name}, &out, &out); err != nil || !strings.Contains(out.String(), "nothing to remove") {
		t.Errorf("second down: %v\n%s", err, out.String())
	}
}

// A lab whose daemon was killed and one of whose pods' netns vanished, and
// then one that lost its state file: Down must still remove everything.
func TestDownAfterCrash(t *testing.T) {
	ctx := context.Background()
	t.Run("daemon killed, netns gone", func(t *testing.T) {
		name := testName("lc")
		l := upLab(t, name, 2, 1)
		pids := daemonPIDs(l)
		if err := l.KillDaemon("n1"); err != nil {
			t.Fatal(err)
		}
		p, _ := l.Pod("n2/p1")
		if err := deleteNetns(p.Netns); err != nil {
			t.Fatal(err)
		}
		if l.Status(ctx).Healthy() {
			t.Error("status says healthy after a crash")
		}
		if err := Down(ctx, name, "", logWriter{t}); err != nil {
			t.Fatalf("down: %v", err)
		}
		assertGone(t, name, pids)
	})
	t.Run("state file lost", func(t *testing.T) {
		name := testName("ls")
		l := upLab(t, name, 2, 1)
		pids := daemonPIDs(l)
		if err := os.Remove(filepath.Join(l.Dir(), StateFile)); err != nil {
			t.Fatal(err)
		}
		if err := Down(ctx, name, "", logWriter{t}); err != nil {
			t.Fatalf("down: %v", err)
		}
		assertGone(t, name, pids)
	})
}

// An Up that fails once nodes exist (a meshlessd that exits at once) cleans
// up after itself, or with KeepOnError leaves a lab Down removes.
func TestUpFailure(t *testing.T) {
	nstest.RequireRoot(t)
	binDir, cniDir := testBins(t)
	bad := t.TempDir()
	if err := os.WriteFile(filepath.Join(bad, "meshlessd"), []byte("#!/bin/sh\necho broken >&2\nexit 1\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Join(binDir, "meshless-cni"), filepath.Join(bad, "meshless-cni")); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for _, keep := range []bool{false, true} {
		name := testName(fmt.Sprintf("lf%v", keep)[:3])
		_, err := Up(ctx, Options{Name: name, Nodes: 2, Pods: 1, BinDir: bad, CNIBinDir: cniDir, KeepOnError: keep})
		if err == nil || !strings.Contains(err.Error(), "broken") {
			t.Fatalf("Up with a broken meshlessd: %v", err)
		}
		if keep {
			if left, _ := labNetns(name); len(left) != 3 {
				t.Errorf("KeepOnError left %v, want underlay and 2 nodes", left)
			}
			if err := Down(ctx, name, "", nil); err != nil {
				t.Fatalf("down: %v", err)
			}
		}
		assertGone(t, name, nil)
	}
}

// Two labs side by side: same addresses, separate netns, no collision.
func TestTwoLabs(t *testing.T) {
	ctx := context.Background()
	a := upLab(t, testName("la"), 1, 1)
	b := upLab(t, testName("lb"), 1, 1)
	if !a.Status(ctx).Healthy() || !b.Status(ctx).Healthy() {
		t.Fatalf("not both healthy:\n%+v\n%+v", a.Status(ctx), b.Status(ctx))
	}
	pids := daemonPIDs(a)
	if err := a.Down(ctx); err != nil {
		t.Fatal(err)
	}
	assertGone(t, a.Name(), pids)
	if s := b.Status(ctx); !s.Healthy() {
		var out bytes.Buffer
		s.Print(&out)
		t.Errorf("lab %s hurt by the other's down:\n%s", b.Name(), out.String())
	}
}
