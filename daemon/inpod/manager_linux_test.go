package inpod_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"

	"github.com/meshless/meshless/daemon/cniapi"
	"github.com/meshless/meshless/daemon/inpod"
	"github.com/meshless/meshless/daemon/localapi"
	"github.com/meshless/meshless/daemon/metrics"
	"github.com/meshless/meshless/daemon/podstore"
	"github.com/meshless/meshless/internal/nstest"
	"github.com/meshless/meshless/internal/podtest"
	"github.com/meshless/meshless/internal/testenv"
)

// recorder is a ConnHandler that notes each accepted connection.
type recorder struct {
	mu   sync.Mutex
	seen map[string][]inpod.Direction // pod key -> directions
}

func (r *recorder) HandleConn(_ context.Context, pod *inpod.Pod, dir inpod.Direction, c *net.TCPConn) {
	r.mu.Lock()
	if r.seen == nil {
		r.seen = map[string][]inpod.Direction{}
	}
	r.seen[pod.Key()] = append(r.seen[pod.Key()], dir)
	r.mu.Unlock()
	c.Close()
}

func (r *recorder) saw(key string, dir inpod.Direction) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !slices.Contains(r.seen[key], dir) {
		return fmt.Errorf("no %v connection handled for %s (have %v)", dir, key, r.seen[key])
	}
	return nil
}

// daemon is an agent serving the CNI API on a temp socket.
type daemon struct {
	agent   *inpod.Manager
	client  *cniapi.Client
	socket  string
	rec     *recorder
	metrics *metrics.Metrics
	stop    func()
}

// start runs an agent with its CNI server over stateDir and socket; the
// daemon stops when the test ends, or earlier through stop.
func start(t *testing.T, stateDir, socket string) *daemon {
	t.Helper()
	store, err := podstore.Open(stateDir)
	if err != nil {
		t.Fatal(err)
	}
	d := &daemon{socket: socket, rec: &recorder{}, metrics: metrics.New()}
	d.agent, err = inpod.New(inpod.Config{Store: store, Handler: d.rec, Socket: socket, Metrics: d.metrics, SweepInterval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := localapi.Listen(socket)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- localapi.Serve(ctx, ln, localapi.NewHandler(localapi.Config{Pods: d.agent})) }()
	if err := d.agent.Start(ctx); err != nil {
		t.Fatal(err)
	}
	var once sync.Once
	d.stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("serve: %v", err)
			}
			d.agent.Close()
		})
	}
	t.Cleanup(d.stop)
	d.client = cniapi.NewClient(socket)
	return d
}

func paths(t *testing.T) (stateDir, socket string) {
	dir := t.TempDir()
	return filepath.Join(dir, "state"), filepath.Join(dir, "run", "cni.sock")
}

func TestRegisterLifecycle(t *testing.T) {
	nstest.RequireRoot(t)
	tests := []struct {
		name      string
		prefixes  []string
		ips       []string
		listeners []string
		probes    []string // network address, reachable from inside the pod
	}{
		{"ipv4", []string{"198.19.1.2/24"}, []string{"198.19.1.2"},
			[]string{"127.0.0.1:15001", "0.0.0.0:15006"},
			[]string{"tcp4 127.0.0.1:15001", "tcp4 198.19.1.2:15006"}},
		{"dual stack", []string{"198.19.1.2/24", "fd00:198:19:1::2/64"}, []string{"198.19.1.2", "fd00:198:19:1::2"},
			[]string{"127.0.0.1:15001", "0.0.0.0:15006", "[::1]:15001", "[::]:15006"},
			[]string{"tcp4 127.0.0.1:15001", "tcp6 [::1]:15001", "tcp4 198.19.1.2:15006", "tcp6 [fd00:198:19:1::2]:15006"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := context.Background()
			stateDir, socket := paths(t)
			d := start(t, stateDir, socket)
			podNS := podtest.NewPod(t, tt.prefixes...)
			pod := podtest.Pod("c1", podNS, tt.ips...)

			fi, err := os.Stat(socket)
			if err != nil {
				t.Fatal(err)
			}
			if fi.Mode().Perm() != 0o600 || fi.Mode().Type() != os.ModeSocket {
				t.Errorf("socket mode %v, want socket 0600", fi.Mode())
			}

			st, err := d.client.Register(ctx, pod)
			if err != nil {
				t.Fatalf("register: %v", err)
			}
			if !slices.Equal(st.Listeners, tt.listeners) {
				t.Errorf("listeners %v, want %v", st.Listeners, tt.listeners)
			}
			for _, p := range tt.probes {
				var network, addr string
				fmt.Sscan(p, &network, &addr)
				c, err := podtest.Dial(podNS, network, addr)
				if err != nil {
					t.Fatalf("connect %s inside pod: %v", addr, err)
				}
				c.Close()
			}
			testenv.Eventually(t, 5*time.Second, func() error {
				return errors.Join(d.rec.saw(pod.Key(), inpod.Outbound), d.rec.saw(pod.Key(), inpod.Inbound))
			})
			if got := podtest.Metric(t, d.metrics.Registry, "meshless_listeners", nil); got != float64(len(tt.listeners)) {
				t.Errorf("meshless_listeners = %v, want %d", got, len(tt.listeners))
			}
			if _, err := os.Stat(filepath.Join(stateDir, pod.Key()+".json")); err != nil {
				t.Errorf("state file: %v", err)
			}

			// Same attachment, same netns: idempotent, listeners kept.
			st2, err := d.client.Register(ctx, pod)
			if err != nil || !slices.Equal(st2.Listeners, st.Listeners) {
				t.Fatalf("re-register: %v, listeners %v", err, st2)
			}
			if got, err := d.client.Get(ctx, pod.Attachment); err != nil || got.Netns != pod.Netns {
				t.Fatalf("get: %v %+v", err, got)
			}

			for i := range 2 {
				if err := d.client.Deregister(ctx, pod.Attachment); err != nil {
					t.Fatalf("deregister #%d: %v", i+1, err)
				}
			}
			if _, err := d.client.Get(ctx, pod.Attachment); !errors.Is(err, cniapi.ErrNotFound) {
				t.Errorf("get after deregister: %v, want ErrNotFound", err)
			}
			for _, p := range tt.probes {
				var network, addr string
				fmt.Sscan(p, &network, &addr)
				if err := podtest.Refused(podNS, network, addr); err != nil {
					t.Errorf("after deregister: %v", err)
				}
			}
			if _, err := os.Stat(filepath.Join(stateDir, pod.Key()+".json")); !os.IsNotExist(err) {
				t.Errorf("state file after deregister: %v", err)
			}
			if got := podtest.Metric(t, d.metrics.Registry, "meshless_pods", nil); got != 0 {
				t.Errorf("meshless_pods = %v after deregister", got)
			}
		})
	}
}

func TestRegisterRejects(t *testing.T) {
	nstest.RequireRoot(t)
	stateDir, socket := paths(t)
	d := start(t, stateDir, socket)
	notNS := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(notNS, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	podNS := podtest.NewPod(t, "198.19.1.2/24")
	tests := []struct {
		name   string
		mutate func(*cniapi.Pod)
	}{
		{"missing netns", func(p *cniapi.Pod) { p.Netns = "/run/netns/does-not-exist" }},
		{"not a netns", func(p *cniapi.Pod) { p.Netns = notNS }},
		{"no IPs", func(p *cniapi.Pod) { p.IPs = nil }},
		{"bad container ID", func(p *cniapi.Pod) { p.ContainerID = "a/b" }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pod := podtest.Pod("c1", podNS, "198.19.1.2")
			tt.mutate(pod)
			_, err := d.client.Register(context.Background(), pod)
			var se *cniapi.StatusError
			if !errors.As(err, &se) || se.Code != 400 {
				t.Fatalf("register: %v, want 400", err)
			}
		})
	}
	if n := len(d.agent.List()); n != 0 {
		t.Errorf("%d pods registered after rejected requests", n)
	}
}

func TestReRegisterOtherNetns(t *testing.T) {
	nstest.RequireRoot(t)
	ctx := context.Background()
	stateDir, socket := paths(t)
	d := start(t, stateDir, socket)
	ns1 := podtest.NewPod(t, "198.19.1.2/24")
	ns2 := podtest.NewPod(t, "198.19.1.3/24")
	if _, err := d.client.Register(ctx, podtest.Pod("c1", ns1, "198.19.1.2")); err != nil {
		t.Fatal(err)
	}
	if _, err := d.client.Register(ctx, podtest.Pod("c1", ns2, "198.19.1.3")); err != nil {
		t.Fatal(err)
	}
	if err := podtest.Refused(ns1, "tcp4", "127.0.0.1:15001"); err != nil {
		t.Errorf("old netns: %v", err)
	}
	c, err := podtest.Dial(ns2, "tcp4", "127.0.0.1:15001")
	if err != nil {
		t.Fatalf("new netns: %v", err)
	}
	c.Close()
	if p, ok := d.agent.PodByIP(podtest.Pod("x", ns2, "198.19.1.3").IPs[0]); !ok || p.Spec().Netns != ns2.Path() {
		t.Errorf("PodByIP(198.19.1.3) = %v, %v", p, ok)
	}
	if _, ok := d.agent.PodByIP(podtest.Pod("x", ns1, "198.19.1.2").IPs[0]); ok {
		t.Error("PodByIP still finds the replaced registration's IP")
	}
}

func TestGC(t *testing.T) {
	nstest.RequireRoot(t)
	ctx := context.Background()
	stateDir, socket := paths(t)
	d := start(t, stateDir, socket)
	var pods []*cniapi.Pod
	var nss []ns.NetNS
	for i := range 3 {
		n := podtest.NewPod(t, fmt.Sprintf("198.19.1.%d/24", i+2))
		p := podtest.Pod(fmt.Sprintf("c%d", i), n, fmt.Sprintf("198.19.1.%d", i+2))
		if _, err := d.client.Register(ctx, p); err != nil {
			t.Fatal(err)
		}
		pods, nss = append(pods, p), append(nss, n)
	}
	resp, err := d.client.GC(ctx, []cniapi.Attachment{pods[1].Attachment})
	if err != nil {
		t.Fatal(err)
	}
	want := []cniapi.Attachment{pods[0].Attachment, pods[2].Attachment}
	if !slices.Equal(resp.Removed, want) {
		t.Errorf("removed %v, want %v", resp.Removed, want)
	}
	list, err := d.client.List(ctx)
	if err != nil || len(list) != 1 || list[0].Key() != pods[1].Key() {
		t.Fatalf("list after gc: %v %+v", err, list)
	}
	if err := podtest.Refused(nss[0], "tcp4", "127.0.0.1:15001"); err != nil {
		t.Error(err)
	}
	c, err := podtest.Dial(nss[1], "tcp4", "127.0.0.1:15001")
	if err != nil {
		t.Fatalf("kept pod: %v", err)
	}
	c.Close()
}

// TestRestart stops a daemon and starts another over the same state: pods
// whose netns lives get their listeners back, a pod whose netns was
// deleted is dropped, and a DEL left as a pending file is applied.
func TestRestart(t *testing.T) {
	nstest.RequireRoot(t)
	ctx := context.Background()
	stateDir, socket := paths(t)
	d1 := start(t, stateDir, socket)

	alive := podtest.NewPod(t, "198.19.1.2/24")
	pending := podtest.NewPod(t, "198.19.1.4/24")
	doomed := podtest.NewNS(t)
	pAlive := podtest.Pod("alive", alive, "198.19.1.2")
	pDoomed := podtest.Pod("doomed", doomed, "198.19.1.3")
	pPending := podtest.Pod("pending", pending, "198.19.1.4")
	for _, p := range []*cniapi.Pod{pAlive, pDoomed, pPending} {
		if _, err := d1.client.Register(ctx, p); err != nil {
			t.Fatal(err)
		}
	}
	d1.stop()
	if _, err := os.Lstat(socket); !os.IsNotExist(err) {
		t.Errorf("socket file still there after stop: %v", err)
	}
	if err := podtest.Refused(alive, "tcp4", "127.0.0.1:15001"); err != nil {
		t.Errorf("listener survived stop: %v", err)
	}

	if err := podtest.Remove(doomed); err != nil {
		t.Fatal(err)
	}
	if err := cniapi.WritePending(socket, pPending.Attachment); err != nil {
		t.Fatal(err)
	}

	d2 := start(t, stateDir, socket)
	list, err := d2.client.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 1 || list[0].Key() != pAlive.Key() {
		t.Fatalf("restored %+v, want only %s", list, pAlive.Key())
	}
	c, err := podtest.Dial(alive, "tcp4", "127.0.0.1:15001")
	if err != nil {
		t.Fatalf("restored listener: %v", err)
	}
	c.Close()
	testenv.Eventually(t, 5*time.Second, func() error { return d2.rec.saw(pAlive.Key(), inpod.Outbound) })
	if err := podtest.Refused(pending, "tcp4", "127.0.0.1:15001"); err != nil {
		t.Errorf("pending-deleted pod: %v", err)
	}
	left, bad, err := cniapi.ReadPending(socket)
	if err != nil || len(left) != 0 || len(bad) != 0 {
		t.Errorf("pending files left: %v %v %v", left, bad, err)
	}
	ents, _ := os.ReadDir(stateDir)
	if len(ents) != 1 || ents[0].Name() != pAlive.Key()+".json" {
		t.Errorf("state dir holds %v, want only %s.json", ents, pAlive.Key())
	}
}

// TestSweepAndPendingBeforeRegister: a pod whose netns vanishes is dropped
// by the background sweep, and a pending DEL is applied before the next
// registration.
func TestSweepAndPendingBeforeRegister(t *testing.T) {
	nstest.RequireRoot(t)
	ctx := context.Background()
	stateDir, socket := paths(t)
	d := start(t, stateDir, socket)

	vanish := podtest.NewNS(t)
	if _, err := d.client.Register(ctx, podtest.Pod("vanish", vanish, "198.19.1.5")); err != nil {
		t.Fatal(err)
	}
	if err := podtest.Remove(vanish); err != nil {
		t.Fatal(err)
	}
	d.agent.Sweep()
	if _, ok := d.agent.Get(cniapi.Attachment{ContainerID: "vanish", IfName: "eth0"}); ok {
		t.Error("pod with a vanished netns survived the sweep")
	}

	a := podtest.NewPod(t, "198.19.1.2/24")
	b := podtest.NewPod(t, "198.19.1.3/24")
	pa := podtest.Pod("a", a, "198.19.1.2")
	if _, err := d.client.Register(ctx, pa); err != nil {
		t.Fatal(err)
	}
	if err := cniapi.WritePending(socket, pa.Attachment); err != nil {
		t.Fatal(err)
	}
	if _, err := d.client.Register(ctx, podtest.Pod("b", b, "198.19.1.3")); err != nil {
		t.Fatal(err)
	}
	if _, ok := d.agent.Get(pa.Attachment); ok {
		t.Error("pending DEL not applied before the next registration")
	}
	if err := podtest.Refused(a, "tcp4", "127.0.0.1:15001"); err != nil {
		t.Error(err)
	}
}
