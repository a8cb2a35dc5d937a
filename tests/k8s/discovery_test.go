package k8s

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/meshless/meshless/daemon/kube"
	"github.com/meshless/meshless/daemon/routes"
)

// stamped is something seen at a time.
type stamped[T any] struct {
	at time.Time
	v  T
}

// models records the models a kube.Source delivers.
type models struct {
	mu   sync.Mutex
	list []stamped[routes.Model]
}

func (m *models) on(x routes.Model) {
	m.mu.Lock()
	m.list = append(m.list, stamped[routes.Model]{time.Now(), x})
	m.mu.Unlock()
}

func (m *models) last() (routes.Model, int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if len(m.list) == 0 {
		return routes.Model{}, 0
	}
	return m.list[len(m.list)-1].v, len(m.list)
}

func (m *models) since(i int) []stamped[routes.Model] {
	m.mu.Lock()
	defer m.mu.Unlock()
	return slices.Clone(m.list[i:])
}

// waitModel polls until the last delivered model satisfies ok and returns
// when it was delivered.
func (m *models) waitModel(t *testing.T, what string, timeout time.Duration, ok func(routes.Model) bool) time.Time {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		m.mu.Lock()
		if n := len(m.list); n > 0 && ok(m.list[n-1].v) {
			at := m.list[n-1].at
			m.mu.Unlock()
			return at
		}
		m.mu.Unlock()
		if time.Now().After(deadline) {
			last, _ := m.last()
			t.Fatalf("%s: not in the model after %v; last model:\n%s", what, timeout, dump(last))
		}
		// Polling interval; the time returned is the delivery's own.
		time.Sleep(5 * time.Millisecond)
	}
}

// sliceWatch records when the test's own watch sees each EndpointSlice
// version, to measure "EndpointSlice published -> model delivered".
type sliceWatch struct {
	mu     sync.Mutex
	events []stamped[*discoveryv1.EndpointSlice]
}

func watchSlices(ctx context.Context, t *testing.T, c *Cluster, ns string) *sliceWatch {
	w := &sliceWatch{}
	go func() {
		for ctx.Err() == nil {
			wi, err := c.Client.DiscoveryV1().EndpointSlices(ns).Watch(ctx, metav1.ListOptions{})
			if err != nil {
				time.Sleep(200 * time.Millisecond) // retry pause, as an informer backs off
				continue
			}
			for ev := range wi.ResultChan() {
				if es, ok := ev.Object.(*discoveryv1.EndpointSlice); ok {
					w.mu.Lock()
					w.events = append(w.events, stamped[*discoveryv1.EndpointSlice]{time.Now(), es})
					w.mu.Unlock()
				}
			}
		}
	}()
	return w
}

// firstReady returns when the watch first saw, after since, a slice of
// service svc whose ready addresses are exactly ips.
func (w *sliceWatch) firstReady(svc string, since time.Time, ips []string) (time.Time, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, e := range w.events {
		if e.at.Before(since) || e.v.Labels[discoveryv1.LabelServiceName] != svc {
			continue
		}
		var got []string
		for _, ep := range e.v.Endpoints {
			if ep.Conditions.Ready == nil || *ep.Conditions.Ready {
				got = append(got, ep.Addresses...)
			}
		}
		sort.Strings(got)
		if slices.Equal(got, ips) {
			return e.at, true
		}
	}
	return time.Time{}, false
}

func findService(m routes.Model, ns, name string) (routes.Service, bool) {
	for _, s := range m.Services {
		if s.Namespace == ns && s.Name == name {
			return s, true
		}
	}
	return routes.Service{}, false
}

func endpointSet(s routes.Service) []string {
	var ips []string
	for _, e := range s.Endpoints {
		ips = append(ips, e.IP.String()+"@"+e.Node)
	}
	sort.Strings(ips)
	return ips
}

func dump(m routes.Model) string {
	var b strings.Builder
	for _, n := range m.Nodes {
		fmt.Fprintf(&b, "  node %s tunnel %v cidrs %v\n", n.Name, n.Tunnel, n.PodCIDRs)
	}
	for _, s := range m.Services {
		fmt.Fprintf(&b, "  service %s/%s vips %v ports %+v endpoints %v\n", s.Namespace, s.Name, s.VIPs, s.Ports, endpointSet(s))
	}
	return b.String()
}

func testPod(name, node string, labels map[string]string) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels},
		Spec: corev1.PodSpec{
			NodeName: node,
			Containers: []corev1.Container{{
				Name: "app", Image: "meshless.local/echo:e2e",
				Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 8080, Protocol: corev1.ProtocolTCP}},
			}},
			TerminationGracePeriodSeconds: new(int64),
		},
	}
}

// latencies collects the propagation measurements for the final report.
type latencies struct {
	rows []string
}

func (l *latencies) add(t *testing.T, step string, action, slice, model time.Time) {
	t.Helper()
	row := fmt.Sprintf("%-34s action->model %6.0f ms", step, ms(model.Sub(action)))
	if !slice.IsZero() {
		row += fmt.Sprintf("   EndpointSlice->model %5.0f ms", ms(model.Sub(slice)))
		if d := model.Sub(slice); d > time.Second {
			t.Errorf("%s: model followed the EndpointSlice after %v, want < 1s", step, d)
		}
	}
	l.rows = append(l.rows, row)
	t.Log(row)
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// TestKubernetes runs one control plane for all the real-apiserver tests.
func TestKubernetes(t *testing.T) {
	// Legitimately optional: -short is `make unit`, the tests that need
	// neither root nor the kube binaries; `make test` (CI) runs it.
	if testing.Short() {
		t.Skip("starts a real Kubernetes control plane; not in -short")
	}
	c := StartCluster(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	t.Run("discovery", func(t *testing.T) { testDiscovery(ctx, t, c) })
	if t.Failed() {
		return
	}
	t.Run("meshlets", func(t *testing.T) { testMeshlets(ctx, t, c) })
	t.Run("daemon", func(t *testing.T) { testDaemon(ctx, t, c) })
	t.Run("manifests", func(t *testing.T) { testManifests(ctx, t, c) })
	t.Run("node", func(t *testing.T) { testNode(ctx, t, c) })
}

// discoveryNS is the namespace of testDiscovery's Service "web" and pods.
const discoveryNS = "default"

// sortedIPs returns the addresses sorted, non-nil even when empty.
func sortedIPs(s ...string) []string { sort.Strings(s); return append([]string{}, s...) }

// webEndpoints is true of a model whose Service "web" has exactly the
// endpoints want ("ip@node").
func webEndpoints(want ...string) func(routes.Model) bool {
	sort.Strings(want)
	return func(m routes.Model) bool {
		s, ok := findService(m, discoveryNS, "web")
		return ok && slices.Equal(endpointSet(s), want)
	}
}

// discovery is what testDiscovery's phases share: the source under test,
// the models it delivered, the test's own EndpointSlice watch, and the
// latencies measured so far.
type discovery struct {
	ctx    context.Context
	c      *Cluster
	src    *kube.Source
	rec    *models
	sw     *sliceWatch
	lat    latencies
	vip    netip.Addr        // Service web's cluster IP
	labels map[string]string // the web pods' labels
}

// testDiscovery runs the discovery source, as meshlessd runs it, against
// the cluster and follows nodes, a Service and its pods through changes
// and an apiserver restart. The phases run in order on the same objects,
// and a failed phase ends the test, as later ones build on its state.
func testDiscovery(ctx context.Context, t *testing.T, c *Cluster) {
	d := &discovery{ctx: ctx, c: c, labels: map[string]string{"app": "web", "version": "v1"}}
	defer func() {
		t.Logf("endpoint propagation (debounce 50 ms):\n%s", strings.Join(d.lat.rows, "\n"))
	}()

	for i := 1; i <= 3; i++ {
		c.CreateNode(ctx, fmt.Sprintf("n%d", i), fmt.Sprintf("198.18.0.%d", i), fmt.Sprintf("198.19.%d.0/24", i))
	}
	d.sw = watchSlices(ctx, t, c, discoveryNS)
	stop := d.startSource(t)
	defer stop()

	d.checkNodes(t)
	d.createService(t)
	d.podSteps(t)
	d.removalSteps(t)
	d.apiserverOutage(t)
	d.checkTable(t)
}

// startSource starts the source as meshlessd runs it; the returned stop
// ends it and checks that Run returned no error.
func (d *discovery) startSource(t *testing.T) (stop func()) {
	d.rec = &models{}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	src, err := kube.NewWithOptions(d.c.Config, d.rec.on, log, kube.Options{})
	if err != nil {
		t.Fatal(err)
	}
	d.src = src
	srcCtx, stopSrc := context.WithCancel(d.ctx)
	srcDone := make(chan error, 1)
	go func() { srcDone <- src.Run(srcCtx) }()
	return func() {
		stopSrc()
		if err := <-srcDone; err != nil {
			t.Errorf("Run: %v", err)
		}
	}
}

// checkNodes waits for the first model and checks its three nodes.
func (d *discovery) checkNodes(t *testing.T) {
	t0 := time.Now()
	d.rec.waitModel(t, "nodes", 30*time.Second, func(m routes.Model) bool { return len(m.Nodes) == 3 })
	if !d.src.HasSynced() {
		t.Fatal("model delivered but HasSynced false")
	}
	t.Logf("source synced in %v", time.Since(t0).Round(time.Millisecond))
	m, _ := d.rec.last()
	for i, n := range m.Nodes {
		want := routes.Node{Name: fmt.Sprintf("n%d", i+1), Tunnel: netip.MustParseAddrPort(fmt.Sprintf("198.18.0.%d:15008", i+1)),
			PodCIDRs: []netip.Prefix{netip.MustParsePrefix(fmt.Sprintf("198.19.%d.0/24", i+1))}}
		if n.Name != want.Name || n.Tunnel != want.Tunnel || !slices.Equal(n.PodCIDRs, want.PodCIDRs) {
			t.Errorf("node %d = %+v, want %+v", i, n, want)
		}
	}
}

// createService creates Service web, with a named targetPort that the
// EndpointSlices resolve, and waits for its VIP in the model.
func (d *discovery) createService(t *testing.T) {
	ns := discoveryNS
	svc, err := d.c.Client.CoreV1().Services(ns).Create(d.ctx, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "web"},
		Spec: corev1.ServiceSpec{
			Selector: map[string]string{"app": "web"},
			Ports:    []corev1.ServicePort{{Name: "http", Port: 80, TargetPort: intstr.FromString("http"), Protocol: corev1.ProtocolTCP}},
		},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	vip := netip.MustParseAddr(svc.Spec.ClusterIP)
	if !netip.MustParsePrefix(serviceCIDR).Contains(vip) {
		t.Fatalf("cluster IP %s outside %s", vip, serviceCIDR)
	}
	d.vip = vip
	at := d.rec.waitModel(t, "service VIP", 10*time.Second, func(m routes.Model) bool {
		s, ok := findService(m, ns, "web")
		return ok && slices.Equal(s.VIPs, []netip.Addr{vip})
	})
	t.Logf("service %s/web VIP %s in the model after %v", ns, vip, at.Sub(svc.CreationTimestamp.Time).Round(time.Millisecond))
}

// step runs action and waits for the model it should give (want) and, if
// sliceIPs is not nil, for the EndpointSlice with those ready addresses,
// and records the latencies.
func (d *discovery) step(t *testing.T, name string, sliceIPs []string, want func(routes.Model) bool, action func()) {
	t.Helper()
	start := time.Now()
	action()
	at := d.rec.waitModel(t, name, 10*time.Second, want)
	var sliceAt time.Time
	if sliceIPs != nil {
		// The model may (rarely) come before our own watch sees the
		// slice; give the watch a moment.
		for i := 0; i < 100; i++ {
			var ok bool
			if sliceAt, ok = d.sw.firstReady("web", start, sliceIPs); ok {
				break
			}
			time.Sleep(10 * time.Millisecond) // polling interval
		}
	}
	d.lat.add(t, name, start, sliceAt, at)
}

// createPod creates pod name of Service web on node and reports it running
// at ip, ready.
func (d *discovery) createPod(t *testing.T, name, node, ip string) {
	t.Helper()
	if _, err := d.c.Client.CoreV1().Pods(discoveryNS).Create(d.ctx, testPod(name, node, d.labels), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	d.c.SetPodStatus(d.ctx, discoveryNS, name, ip, true)
}

// deletePod deletes pod name at once.
func (d *discovery) deletePod(t *testing.T, name string) {
	t.Helper()
	if err := d.c.Client.CoreV1().Pods(discoveryNS).Delete(d.ctx, name, metav1.DeleteOptions{GracePeriodSeconds: new(int64)}); err != nil {
		t.Fatal(err)
	}
}

// podSteps adds web's pods, turns one not ready and back, and relabels
// one: the endpoints, their target port and labels follow.
func (d *discovery) podSteps(t *testing.T) {
	ctx, c, ns := d.ctx, d.c, discoveryNS
	d.step(t, "add 2 pods (n1, n2)", sortedIPs("198.19.1.10", "198.19.2.10"), webEndpoints("198.19.1.10@n1", "198.19.2.10@n2"), func() {
		for i, node := range []string{"n1", "n2"} {
			d.createPod(t, fmt.Sprintf("web-%d", i+1), node, fmt.Sprintf("198.19.%d.10", i+1))
		}
	})
	m, _ := d.rec.last()
	s, _ := findService(m, ns, "web")
	if want := []routes.ServicePort{{Name: "http", Port: 80, TargetPort: 8080}}; !slices.Equal(s.Ports, want) {
		t.Errorf("ports %+v, want %+v (targetPort resolved from the slice)", s.Ports, want)
	}
	for _, e := range s.Endpoints {
		if e.Labels["app"] != "web" || e.Labels["version"] != "v1" {
			t.Errorf("endpoint %s labels %v, want the pod's", e.IP, e.Labels)
		}
	}

	d.step(t, "add a 3rd pod (n3)", sortedIPs("198.19.1.10", "198.19.2.10", "198.19.3.10"),
		webEndpoints("198.19.1.10@n1", "198.19.2.10@n2", "198.19.3.10@n3"), func() {
			d.createPod(t, "web-3", "n3", "198.19.3.10")
		})

	d.step(t, "pod web-2 not ready", sortedIPs("198.19.1.10", "198.19.3.10"), webEndpoints("198.19.1.10@n1", "198.19.3.10@n3"), func() {
		c.SetPodStatus(ctx, ns, "web-2", "198.19.2.10", false)
	})

	d.step(t, "pod web-2 ready again", sortedIPs("198.19.1.10", "198.19.2.10", "198.19.3.10"),
		webEndpoints("198.19.1.10@n1", "198.19.2.10@n2", "198.19.3.10@n3"), func() {
			c.SetPodStatus(ctx, ns, "web-2", "198.19.2.10", true)
		})

	d.step(t, "pod labels changed", nil, func(m routes.Model) bool {
		s, ok := findService(m, ns, "web")
		return ok && slices.ContainsFunc(s.Endpoints, func(e routes.Endpoint) bool { return e.Labels["version"] == "v2" })
	}, func() {
		patch := []byte(`{"metadata":{"labels":{"version":"v2"}}}`)
		if _, err := c.Client.CoreV1().Pods(ns).Patch(ctx, "web-3", types.MergePatchType, patch, metav1.PatchOptions{}); err != nil {
			t.Fatal(err)
		}
	})
}

// removalSteps deletes web's pods down to zero, which keeps the Service's
// VIP and port, and changes a node's address.
func (d *discovery) removalSteps(t *testing.T) {
	d.step(t, "delete pod web-3", sortedIPs("198.19.1.10", "198.19.2.10"), webEndpoints("198.19.1.10@n1", "198.19.2.10@n2"), func() {
		d.deletePod(t, "web-3")
	})

	d.step(t, "scale to zero", sortedIPs(), webEndpoints(), func() {
		for _, p := range []string{"web-1", "web-2"} {
			d.deletePod(t, p)
		}
	})
	m, _ := d.rec.last()
	s, ok := findService(m, discoveryNS, "web")
	if !ok || !slices.Equal(s.VIPs, []netip.Addr{d.vip}) || len(s.Ports) != 1 {
		t.Errorf("scaled to zero: service %+v, want VIP %s and its port kept", s, d.vip)
	}

	d.step(t, "node n2 address change", nil, func(m routes.Model) bool {
		return slices.ContainsFunc(m.Nodes, func(n routes.Node) bool {
			return n.Name == "n2" && n.Tunnel == netip.MustParseAddrPort("198.18.0.22:15008")
		})
	}, func() {
		d.c.PatchStatus(d.ctx, "nodes", "", "n2", map[string]any{
			"addresses": []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: "198.18.0.22"}, {Type: corev1.NodeHostName, Address: "n2"}},
		})
	})
}

// apiserverOutage kills the API server: the model stays during the outage
// and catches up after the restart.
func (d *discovery) apiserverOutage(t *testing.T) {
	d.step(t, "scale up to 1 (web-4 on n1)", sortedIPs("198.19.1.14"), webEndpoints("198.19.1.14@n1"), func() {
		d.createPod(t, "web-4", "n1", "198.19.1.14")
	})
	before, n0 := d.rec.last()
	killAt := time.Now()
	d.c.StopAPIServer()
	t.Logf("kube-apiserver killed")
	d.checkOutage(t, killAt)
	d.c.StartAPIServer()
	outage := time.Since(killAt)
	for _, x := range d.rec.since(n0) {
		s, ok := findService(x.v, discoveryNS, "web")
		if !ok || !slices.Equal(endpointSet(s), []string{"198.19.1.14@n1"}) || len(x.v.Nodes) != 3 {
			t.Errorf("model delivered %v after the kill lost state:\n%s\nbefore:\n%s", x.at.Sub(killAt), dump(x.v), dump(before))
		}
	}
	d.checkCatchUp(t, outage)
}

// checkOutage checks the source during the outage: no model is delivered
// (the last one stays) and LastError says why.
func (d *discovery) checkOutage(t *testing.T, killAt time.Time) {
	deadline := time.Now().Add(3 * time.Second)
	for d.src.LastError() == nil && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond) // polling interval
	}
	if err := d.src.LastError(); err == nil {
		t.Errorf("LastError nil 3s into the outage")
	} else {
		t.Logf("LastError %v after the kill: %v", time.Since(killAt).Round(time.Millisecond), err)
	}
	// The outage itself is under test: for two more seconds nothing may be
	// delivered that loses state (checked by apiserverOutage, over every
	// model since the kill), and the source must still count as synced.
	time.Sleep(2 * time.Second)
	if !d.src.HasSynced() {
		t.Errorf("HasSynced false during the outage")
	}
}

// checkCatchUp checks that a change made after the restart reaches the
// model, and that LastError clears. The informers reconnect with backoff
// (client-go: 0.8 s doubling, 30 s cap).
func (d *discovery) checkCatchUp(t *testing.T, outage time.Duration) {
	restartAt := time.Now()
	d.createPod(t, "web-5", "n3", "198.19.3.15")
	at := d.rec.waitModel(t, "catch-up after the apiserver restart", 60*time.Second, webEndpoints("198.19.1.14@n1", "198.19.3.15@n3"))
	row := fmt.Sprintf("%-34s outage %v; change after restart -> model %6.0f ms", "apiserver restart", outage.Round(time.Millisecond), ms(at.Sub(restartAt)))
	d.lat.rows = append(d.lat.rows, row)
	t.Log(row)
	deadline := time.Now().Add(15 * time.Second)
	for d.src.LastError() != nil && time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond) // polling interval
	}
	if err := d.src.LastError(); err != nil {
		t.Errorf("LastError still %v after the restart", err)
	}
	st := d.src.Status()
	t.Logf("source status: synced=%v updates=%d nodes=%d services=%d endpoints=%d warnings=%v",
		st.Synced, st.Updates, st.Nodes, st.Services, st.Endpoints, st.Warnings)
}

// checkTable checks that the last model builds a routing table, with the
// VIP routed to the endpoints and the target port.
func (d *discovery) checkTable(t *testing.T) {
	m, _ := d.rec.last()
	tbl := routes.NewTable("n1")
	if err := tbl.Update(m); err != nil {
		t.Fatalf("table update: %v", err)
	}
	r := tbl.Lookup(netip.AddrPortFrom(d.vip, 80))
	if r.Kind != routes.KindService || len(r.Candidates) != 2 {
		t.Fatalf("lookup %s:80 = %+v", d.vip, r)
	}
	for _, cnd := range r.Candidates {
		if cnd.Addr.Port() != 8080 {
			t.Errorf("candidate %v: want target port 8080", cnd)
		}
		if cnd.Node == "n1" && !cnd.Local {
			t.Errorf("candidate %v on n1 not local", cnd)
		}
		if cnd.Node == "n3" && cnd.Tunnel != netip.MustParseAddrPort("198.18.0.3:15008") {
			t.Errorf("candidate %v: tunnel %v", cnd, cnd.Tunnel)
		}
	}
}
