package mesh

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"net"
	"testing"
	"time"

	"github.com/meshless/meshless/daemon/meshlet"
	"github.com/meshless/meshless/daemon/native"
	"github.com/meshless/meshless/internal/lab"
	"github.com/meshless/meshless/tests/harness"
)

// testNative: the native API on the lab. Meshlet "nat" serves echo-local
// (n1/p2, the client's node) and echo-remote (n2/p2) on the servers'
// /meshlet/server/<service>; the client n1/p3 joins Meshlet "natcli" and
// dials /meshlet/client/meshless. Same node, the daemon hands the client
// the server's socket (it leaves the byte path); across nodes it relays
// through the tunnel to the far server's socket. Both are byte-exact both
// ways with half-close. Refusals come back with their status.
func (s *meshSuite) testNative(t *testing.T) {
	l := s.l
	base := []lab.ServiceState{
		{Name: "race", VIP: raceVIP, Port: 80, TargetPort: appPort, Endpoints: []string{"n2/p1", "n2/p2", "n2/p3"}},
		{Name: "uds-local", VIP: udsLocalVIP, Port: 80, TargetPort: appPort, Endpoints: []string{"n1/p2"}},
		{Name: "uds-remote", VIP: udsRemoteVIP, Port: 80, TargetPort: appPort, Endpoints: []string{"n2/p2"}},
	}
	must(t, l.SetServices(append(base,
		lab.ServiceState{Name: "echo-local", VIP: "198.18.100.51", Port: 80, TargetPort: appPort, Endpoints: []string{"n1/p2"}},
		lab.ServiceState{Name: "echo-remote", VIP: "198.18.100.52", Port: 80, TargetPort: appPort, Endpoints: []string{"n2/p2"}},
	)))
	t.Cleanup(func() {
		must(t, l.SetMeshlets(nil))
		for _, ref := range []string{s.client, "n1/p2", "n2/p2"} {
			must(t, l.SetPodLabels(ref, nil))
		}
		must(t, l.SetServices(base))
	})
	for _, ref := range []string{"n1/p2", "n2/p2"} {
		must(t, l.SetPodLabels(ref, map[string]string{meshlet.LabelMeshlet: "nat"}))
	}
	must(t, l.SetPodLabels(s.client, map[string]string{meshlet.LabelMeshlet: "natcli"}))
	must(t, l.SetMeshlets([]meshlet.Meshlet{
		{Namespace: "default", Name: "nat", Spec: meshlet.Spec{Server: meshlet.Server{Services: []meshlet.Service{{Name: "echo-local"}, {Name: "echo-remote"}}}}},
		{Namespace: "default", Name: "natcli", Spec: meshlet.Spec{Client: []meshlet.ClientRef{{Meshlet: "nat", Service: "echo-local"}}}},
	}))
	waitServices(t, l, 6)
	local := nativeServer(t, l, "n1/p2", "echo-local")
	remote := nativeServer(t, l, "n2/p2", "echo-remote")
	d := &native.Dialer{Dir: harness.LabPod(t, l, s.client).MeshletDir}

	handoffs := metric(t, l, 1, "meshless_native_handoffs_total")
	nativeExchange(t, d, "default/nat/echo-local", 3<<20)
	if h := metric(t, l, 1, "meshless_native_handoffs_total") - handoffs; h != 1 {
		t.Errorf("same node: %v hand-offs, want 1 (the daemon out of the byte path)", h)
	}
	// Not declared yet: refused, then allowed once the client declares it.
	if _, err := d.Dial(context.Background(), "default/nat/echo-remote"); !errors.Is(err, native.ErrNotAllowed) {
		t.Errorf("undeclared service: %v, want not allowed", err)
	}
	declared := func(maxConn int) []meshlet.Meshlet {
		return []meshlet.Meshlet{
			{Namespace: "default", Name: "nat", Spec: meshlet.Spec{Server: meshlet.Server{Services: []meshlet.Service{{Name: "echo-local"}, {Name: "echo-remote", MaxConn: maxConn}}}}},
			{Namespace: "default", Name: "natcli", Spec: meshlet.Spec{Client: []meshlet.ClientRef{{Meshlet: "nat", Service: "echo-local"}, {Meshlet: "nat", Service: "echo-remote"}}}},
		}
	}
	since := time.Now()
	must(t, l.SetMeshlets(declared(0)))
	waitUpdated(t, l, since)
	nativeExchange(t, d, "default/nat/echo-remote", 3<<20)
	if local.conns.Load() < 1 || remote.conns.Load() < 1 {
		t.Errorf("servers got %d and %d connections", local.conns.Load(), remote.conns.Load())
	}
	// maxConn 1 on the one remote server: a second concurrent one is
	// refused as all full. (The connection just closed frees its slot as
	// soon as the far daemon sees it end: wait for that.)
	since = time.Now()
	must(t, l.SetMeshlets(declared(1)))
	waitUpdated(t, l, since)
	held := dialEventually(t, d, "default/nat/echo-remote")
	defer held.Close()
	if _, err := d.Dial(context.Background(), "default/nat/echo-remote"); !errors.Is(err, native.ErrAllFull) {
		t.Errorf("second connection to a server at maxConn 1: %v, want all full", err)
	}
	if _, err := d.Dial(context.Background(), "default/nat/nothing"); !errors.Is(err, native.ErrUnknownService) {
		t.Errorf("unknown service: %v", err)
	}
}

// nativeServer serves an app on the pod's /meshlet/server/<service>.
func nativeServer(t *testing.T, l *lab.Lab, ref, service string) *app {
	t.Helper()
	ln, err := (&native.ListenConfig{Dir: harness.LabPod(t, l, ref).MeshletDir}).Listen(service)
	if err != nil {
		t.Fatal(err)
	}
	return serveApp(t, ln)
}

// dialEventually dials target until it succeeds and returns the
// connection.
func dialEventually(t *testing.T, d *native.Dialer, target string) net.Conn {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := d.Dial(context.Background(), target)
		if err == nil {
			return c
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %v", target, err)
		}
		time.Sleep(50 * time.Millisecond) // polling interval
	}
}

// nativeExchange dials target, sends size bytes, half-closes, and checks
// the app's answer: every byte arrived, in order.
func nativeExchange(t *testing.T, d *native.Dialer, target string, size int64) {
	t.Helper()
	c, err := d.Dial(context.Background(), target)
	if err != nil {
		t.Fatalf("%s: %v", target, err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(time.Minute))
	h := sha256.New()
	werr := make(chan error, 1)
	go func() {
		_, err := io.CopyN(io.MultiWriter(c, h), stream(uint64(size)), size)
		if err == nil {
			err = c.(interface{ CloseWrite() error }).CloseWrite()
		}
		werr <- err
	}()
	b, err := io.ReadAll(c)
	if err := <-werr; err != nil {
		t.Fatalf("%s: send: %v", target, err)
	}
	if err != nil {
		t.Fatalf("%s: read: %v", target, err)
	}
	if want := fmt.Sprintf("unix %d %x", size, h.Sum(nil)); string(b) != want {
		t.Fatalf("%s: answer %q, want %q", target, b, want)
	}
}
