package k8s

import (
	"context"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/rest"

	"github.com/meshless/meshless/daemon/kube"
	"github.com/meshless/meshless/daemon/meshlet"
	"github.com/meshless/meshless/daemon/routes"
)

// warnings collects the apiserver's warning headers.
type warnings struct {
	mu   sync.Mutex
	list []string
}

func (w *warnings) HandleWarningHeader(_ int, _ string, text string) {
	w.mu.Lock()
	w.list = append(w.list, text)
	w.mu.Unlock()
}

func (w *warnings) take() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	l := w.list
	w.list = nil
	return l
}

// meshletObject is a Meshlet as a user writes it; spec in YAML-ish Go.
func meshletObject(ns, name string, spec map[string]any) *unstructured.Unstructured {
	return &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": meshlet.APIVersion,
		"kind":       meshlet.Kind,
		"metadata":   map[string]any{"namespace": ns, "name": name},
		"spec":       spec,
	}}
}

func services(s ...map[string]any) map[string]any {
	l := []any{}
	for _, x := range s {
		l = append(l, x)
	}
	return map[string]any{"server": map[string]any{"services": l}}
}

func findMeshlet(m routes.Model, ns, name string) (meshlet.Meshlet, bool) {
	i := slices.IndexFunc(m.Meshlets, func(x meshlet.Meshlet) bool { return x.Namespace == ns && x.Name == name })
	if i < 0 {
		return meshlet.Meshlet{}, false
	}
	return m.Meshlets[i], true
}

// testMeshlets installs the Meshlet CRD from install/kubernetes and checks
// what the apiserver accepts, and that Meshlets and the pods' identity
// reach a kube.Source's model within seconds.
func testMeshlets(ctx context.Context, t *testing.T, c *Cluster) {
	start := time.Now()
	const ns = "shop"
	root, err := repoRoot()
	if err != nil {
		t.Fatal(err)
	}
	crd := filepath.Join(root, "install", "kubernetes", "meshlet-crd.yaml")
	for _, args := range [][]string{
		{"apply", "-f", crd},
		{"wait", "--for=condition=Established", "--timeout=60s", "crd/meshlets." + meshlet.Group},
	} {
		if out, err := c.Kubectl(args...); err != nil {
			t.Fatalf("kubectl %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	t.Logf("CRD installed and established in %v", time.Since(start).Round(time.Millisecond))
	if _, err := c.Client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	warn := &warnings{}
	cfg := rest.CopyConfig(c.Config)
	cfg.WarningHandler = warn
	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	meshlets := dyn.Resource(kube.MeshletGroupVersion.WithResource(meshlet.Resource)).Namespace(ns)

	t.Run("schema", func(t *testing.T) { testMeshletSchema(ctx, t, c, meshlets, warn) })

	// The source, as meshlessd runs it.
	rec := &models{}
	src, err := kube.NewWithOptions(c.Config, rec.on, nil, kube.Options{StatusDelay: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	srcCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- src.Run(srcCtx) }()
	defer func() { stop(); <-done }()

	t.Run("meshlets reach the model", func(t *testing.T) { testMeshletsInModel(ctx, t, meshlets, rec) })
	t.Run("workloads", func(t *testing.T) { testWorkloads(ctx, t, c, ns, rec) })
	t.Logf("meshlet tests against the apiserver: %v", time.Since(start).Round(time.Millisecond))
}

// testMeshletSchema: what the CRD's schema rejects, with a message that
// names the field.
func testMeshletSchema(ctx context.Context, t *testing.T, c *Cluster, meshlets dynamic.ResourceInterface, warn *warnings) {
	valid := map[string]any{
		"client": []any{map[string]any{"namespace": "data", "meshlet": "db", "service": "pg"}},
		"server": map[string]any{
			"selector": map[string]any{"role": "server", "example.com/tier": "front"},
			"services": []any{map[string]any{"name": "web", "maxConn": 100, "idleTimeout": "1h30m"}, map[string]any{"name": "admin"}},
			"canary":   []any{map[string]any{"version": "v1", "weight": 90}, map[string]any{"version": "v2", "weight": 10}},
		},
	}
	if _, err := meshlets.Create(ctx, meshletObject("shop", "valid", valid), metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}}); err != nil {
		t.Fatalf("a valid Meshlet is rejected: %v", err)
	}
	canary := func(c ...map[string]any) map[string]any {
		l := []any{}
		for _, x := range c {
			l = append(l, x)
		}
		return map[string]any{"server": map[string]any{"canary": l}}
	}
	tests := []struct {
		name string
		obj  *unstructured.Unstructured
		want []string // all in the error
	}{
		{"bad duration", meshletObject("shop", "x", services(map[string]any{"name": "web", "idleTimeout": "5 min"})),
			[]string{"spec.server.services[0].idleTimeout", "should match"}},
		{"duration in days", meshletObject("shop", "x", services(map[string]any{"name": "web", "idleTimeout": "1d"})),
			[]string{"spec.server.services[0].idleTimeout"}},
		{"negative maxConn", meshletObject("shop", "x", services(map[string]any{"name": "web", "maxConn": -1})),
			[]string{"spec.server.services[0].maxConn", "greater than or equal to 0"}},
		{"duplicate service names", meshletObject("shop", "x", services(map[string]any{"name": "web"}, map[string]any{"name": "web"})),
			[]string{"spec.server.services[1]", "Duplicate value"}},
		{"service name with a dot", meshletObject("shop", "x", services(map[string]any{"name": "a.b"})),
			[]string{"spec.server.services[0].name"}},
		{"duplicate versions", meshletObject("shop", "x", canary(map[string]any{"version": "v1", "weight": 50}, map[string]any{"version": "v1", "weight": 50})),
			[]string{"spec.server.canary[1]", "Duplicate value"}},
		{"negative weight", meshletObject("shop", "x", canary(map[string]any{"version": "v1", "weight": 101}, map[string]any{"version": "v2", "weight": -1})),
			[]string{"spec.server.canary[0].weight", "spec.server.canary[1].weight"}},
		{"weights do not add up", meshletObject("shop", "x", canary(map[string]any{"version": "v1", "weight": 50}, map[string]any{"version": "v2", "weight": 0})),
			[]string{"spec.server.canary", "canary weights must add up to 100"}},
		{"weight missing", meshletObject("shop", "x", canary(map[string]any{"version": "v1"})),
			[]string{"spec.server.canary[0].weight", "Required value"}},
		{"client without service", meshletObject("shop", "x", map[string]any{"client": []any{map[string]any{"meshlet": "db"}}}),
			[]string{"spec.client[0].service", "Required value"}},
		{"bad selector key", meshletObject("shop", "x", map[string]any{"server": map[string]any{"selector": map[string]any{"a b": "c"}}}),
			[]string{"spec.server.selector", "label keys"}},
		{"no spec", &unstructured.Unstructured{Object: map[string]any{"apiVersion": meshlet.APIVersion, "kind": meshlet.Kind, "metadata": map[string]any{"name": "x"}}},
			[]string{"spec", "Required value"}},
		{"name too long for the label", meshletObject("shop", strings.Repeat("n", 64), map[string]any{}),
			[]string{"metadata.name", "63"}},
	}
	for _, tt := range tests {
		_, err := meshlets.Create(ctx, tt.obj, metav1.CreateOptions{})
		if err == nil {
			t.Errorf("%s: accepted", tt.name)
			continue
		}
		for _, w := range tt.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%s: error %q does not name %q", tt.name, err, w)
			}
		}
	}

	// Unknown fields: rejected when the client validates strictly (kubectl
	// does by default), pruned with a warning otherwise.
	typo := meshletObject("shop", "typo", services(map[string]any{"name": "web", "maxconn": 5}))
	_, err := meshlets.Create(ctx, typo, metav1.CreateOptions{FieldValidation: "Strict"})
	if err == nil || !strings.Contains(err.Error(), `unknown field "spec.server.services[0].maxconn"`) {
		t.Errorf("unknown field, strict: %v", err)
	}
	warn.take()
	got, err := meshlets.Create(ctx, typo, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("unknown field, default validation: %v", err)
	}
	if w := warn.take(); !slices.ContainsFunc(w, func(s string) bool { return strings.Contains(s, `unknown field "spec.server.services[0].maxconn"`) }) {
		t.Errorf("unknown field: warnings %q, want one naming it", w)
	}
	svc, _, _ := unstructured.NestedSlice(got.Object, "spec", "server", "services")
	if len(svc) != 1 || len(svc[0].(map[string]any)) != 1 {
		t.Errorf("unknown field not pruned: services %v", svc)
	}
	if err := meshlets.Delete(ctx, "typo", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	manifest := filepath.Join(t.TempDir(), "typo.yaml")
	writeFile(t, manifest, []byte("apiVersion: "+meshlet.APIVersion+"\nkind: Meshlet\nmetadata: {name: typo, namespace: shop}\nspec:\n  clients: []\n"))
	if out, err := c.Kubectl("apply", "-f", manifest); err == nil || !strings.Contains(out, `unknown field "spec.clients"`) {
		t.Errorf("kubectl apply with an unknown field: %v\n%s", err, out)
	}
}

// testMeshletsInModel: created, changed and deleted Meshlets reach the
// source's model within seconds; one that only the daemon can reject is
// left out and its status says why.
func testMeshletsInModel(ctx context.Context, t *testing.T, meshlets dynamic.ResourceInterface, rec *models) {
	const within = 10 * time.Second
	maxConn := func(name string, want int64) func(routes.Model) bool {
		return func(m routes.Model) bool {
			x, ok := findMeshlet(m, "shop", name)
			return ok && int64(x.Spec.Server.Services[0].MaxConn) == want
		}
	}
	accepted := func(name, status, msg string) {
		t.Helper()
		deadline := time.Now().Add(within)
		for {
			o, err := meshlets.Get(ctx, name, metav1.GetOptions{})
			if err != nil {
				t.Fatal(err)
			}
			conds, _, _ := unstructured.NestedSlice(o.Object, "status", "conditions")
			for _, c := range conds {
				c := c.(map[string]any)
				if c["type"] == kube.ConditionAccepted && c["status"] == status && strings.Contains(fmt.Sprint(c["message"]), msg) {
					return
				}
			}
			if time.Now().After(deadline) {
				t.Fatalf("meshlet %s: no Accepted=%s with %q after %v; status %v", name, status, msg, within, o.Object["status"])
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	step := func(what string, want func(routes.Model) bool, action func() error) {
		t.Helper()
		at := time.Now()
		if err := action(); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		seen := rec.waitModel(t, what, within, want)
		t.Logf("%-40s -> model %6.0f ms", what, ms(seen.Sub(at)))
	}

	step("Meshlet created", maxConn("web", 10), func() error {
		_, err := meshlets.Create(ctx, meshletObject("shop", "web", services(map[string]any{"name": "web", "maxConn": 10})), metav1.CreateOptions{})
		return err
	})
	accepted("web", "True", "used by meshlessd")
	step("Meshlet changed (maxConn 10 -> 20)", maxConn("web", 20), func() error {
		_, err := meshlets.Patch(ctx, "web", types.MergePatchType, []byte(`{"spec":{"server":{"services":[{"name":"web","maxConn":20}]}}}`), metav1.PatchOptions{})
		return err
	})
	// The schema cannot catch a duration too large for Go, nor a service
	// name another Meshlet of the namespace serves: the source leaves
	// those out and says why in the status.
	if _, err := meshlets.Create(ctx, meshletObject("shop", "huge", services(map[string]any{"name": "huge", "idleTimeout": "9999999999h"})), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	accepted("huge", "False", `spec.server.services[0].idleTimeout: invalid duration "9999999999h"`)
	if _, err := meshlets.Create(ctx, meshletObject("shop", "clash", services(map[string]any{"name": "web"})), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	accepted("clash", "False", `service "web" is already served by Meshlet shop/web`)
	if m, _ := rec.last(); len(m.Meshlets) != 1 {
		t.Errorf("meshlets in the model: %+v, want shop/web alone", m.Meshlets)
	}
	// With shop/web gone the clash is over: the waiting Meshlet is used.
	step("Meshlet deleted, the other one takes over", func(m routes.Model) bool {
		_, ok := findMeshlet(m, "shop", "web")
		return !ok && maxConn("clash", 0)(m)
	}, func() error {
		return meshlets.Delete(ctx, "web", metav1.DeleteOptions{})
	})
	accepted("clash", "True", "used by meshlessd")
	for _, n := range []string{"huge", "clash"} {
		if err := meshlets.Delete(ctx, n, metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	rec.waitModel(t, "no Meshlets", within, func(m routes.Model) bool { return len(m.Meshlets) == 0 })
}

// testWorkloads: a pod's address, node, service account and labels reach
// the model's workloads; host-network pods do not.
func testWorkloads(ctx context.Context, t *testing.T, c *Cluster, ns string, rec *models) {
	const within = 10 * time.Second
	if _, err := c.Client.CoreV1().ServiceAccounts(ns).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "web"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	p := testPod("web-1", "n1", map[string]string{meshlet.LabelMeshlet: "web", "version": "v1"})
	p.Spec.ServiceAccountName = "web"
	hn := testPod("agent", "n1", nil)
	hn.Spec.HostNetwork = true
	for _, x := range []*corev1.Pod{p, hn} {
		if _, err := c.Client.CoreV1().Pods(ns).Create(ctx, x, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	defer func() {
		for _, n := range []string{"web-1", "agent"} {
			_ = c.Client.CoreV1().Pods(ns).Delete(ctx, n, metav1.DeleteOptions{GracePeriodSeconds: new(int64)})
		}
	}()
	at := time.Now()
	c.SetPodStatus(ctx, ns, "web-1", "198.19.1.60", true)
	c.SetPodStatus(ctx, ns, "agent", "198.18.0.1", true)
	workload := func(m routes.Model, name string) (meshlet.Workload, bool) {
		i := slices.IndexFunc(m.Workloads, func(w meshlet.Workload) bool { return w.Namespace == ns && w.Name == name })
		if i < 0 {
			return meshlet.Workload{}, false
		}
		return m.Workloads[i], true
	}
	seen := rec.waitModel(t, "the pod's workload", within, func(m routes.Model) bool { _, ok := workload(m, "web-1"); return ok })
	t.Logf("%-40s -> model %6.0f ms", "pod address set", ms(seen.Sub(at)))
	m, _ := rec.last()
	w, _ := workload(m, "web-1")
	if w.ServiceAccount != "web" || w.Node != "n1" || w.Version() != "v1" || w.MeshletName() != "web" ||
		len(w.IPs) != 1 || w.IPs[0].String() != "198.19.1.60" {
		t.Errorf("workload %+v", w)
	}
	if w.Identity("cluster.local") != "spiffe://cluster.local/ns/shop/sa/web" {
		t.Errorf("identity %s", w.Identity("cluster.local"))
	}
	if _, ok := workload(m, "agent"); ok {
		t.Error("a host-network pod is a workload")
	}
	at = time.Now()
	if _, err := c.Client.CoreV1().Pods(ns).Patch(ctx, "web-1", types.MergePatchType, []byte(`{"metadata":{"labels":{"version":"v2"}}}`), metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	seen = rec.waitModel(t, "the new label", within, func(m routes.Model) bool { w, ok := workload(m, "web-1"); return ok && w.Version() == "v2" })
	t.Logf("%-40s -> model %6.0f ms", "pod label changed", ms(seen.Sub(at)))
	at = time.Now()
	if err := c.Client.CoreV1().Pods(ns).Delete(ctx, "web-1", metav1.DeleteOptions{GracePeriodSeconds: new(int64)}); err != nil {
		t.Fatal(err)
	}
	seen = rec.waitModel(t, "the workload gone", within, func(m routes.Model) bool { _, ok := workload(m, "web-1"); return !ok })
	t.Logf("%-40s -> model %6.0f ms", "pod deleted", ms(seen.Sub(at)))
}

// meshletRBAC checks the meshless ClusterRole on Meshlets: read them, and
// update their status only.
func meshletRBAC(canI func(verb, resource string, want bool)) {
	const meshlets = meshlet.Resource + "." + meshlet.Group
	for _, v := range []string{"get", "list", "watch"} {
		canI(v, meshlets, true)
	}
	for _, v := range []string{"create", "update", "patch", "delete"} {
		canI(v, meshlets, false)
	}
	canI("update", meshlets+"/status", true)
	canI("patch", meshlets+"/status", false)
}
