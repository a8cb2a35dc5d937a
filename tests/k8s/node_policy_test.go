package k8s

import (
	"context"
	"fmt"
	"os/exec"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/dynamic"

	"github.com/meshless/meshless/daemon/kube"
	"github.com/meshless/meshless/daemon/meshlet"
	"github.com/meshless/meshless/tests/harness"
)

// testMeshletPolicy, on the real node with the real daemon: the server
// pod web-1 joins Meshlet "web", which serves Service web; a client pod of
// Meshlet "client" is refused until its Meshlet declares web as client,
// allowed within seconds once it does, refused again once the declaration
// is withdrawn, and allowed once Meshlet web (the policy) is gone.
func testMeshletPolicy(ctx context.Context, t *testing.T, c *Cluster, n *Node, d *harness.Daemon, ns, vip, server string) {
	root, err := repoRoot()
	if err != nil {
		t.Fatal(err)
	}
	crd := root + "/install/kubernetes/meshlet-crd.yaml"
	for _, args := range [][]string{{"apply", "-f", crd}, {"wait", "--for=condition=Established", "--timeout=60s", "crd/meshlets." + meshlet.Group}} {
		if out, err := c.Kubectl(args...); err != nil {
			t.Fatalf("kubectl %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	dyn, err := dynamic.NewForConfig(c.Config)
	if err != nil {
		t.Fatal(err)
	}
	meshlets := dyn.Resource(kube.MeshletGroupVersion.WithResource(meshlet.Resource)).Namespace(ns)
	patch := fmt.Sprintf(`{"metadata":{"labels":{%q:"web"}}}`, meshlet.LabelMeshlet)
	if _, err := c.Client.CoreV1().Pods(ns).Patch(ctx, server, types.MergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	cli := serverPod("acl-client")
	cli.Labels = map[string]string{"app": "acl-client", meshlet.LabelMeshlet: "client"}
	cli = n.waitPodRunning(ctx, n.createPod(ctx, ns, cli), 120*time.Second)
	if _, err := meshlets.Create(ctx, meshletObject(ns, "web", services(map[string]any{"name": "web"})), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := meshlets.Create(ctx, meshletObject(ns, "client", map[string]any{}), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	declare := func(yes bool) {
		spec := map[string]any{}
		if yes {
			spec["client"] = []any{map[string]any{"meshlet": "web", "service": "web"}}
		}
		obj, err := meshlets.Get(ctx, "client", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		obj.Object["spec"] = spec
		if _, err := meshlets.Update(ctx, obj, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	expect := func(what string, allowed bool) {
		t0 := time.Now()
		waitUntil(t, what, 30*time.Second, func() (bool, string) {
			out, err := n.execInPod(ctx, cli, "/demo-client", "--n", "1", "--new-conn", "--timeout", "3s", fmt.Sprintf("http://%s/", vip))
			ok := err == nil && strings.Contains(out, "instance="+server+" ")
			return ok == allowed, fmt.Sprintf("err %v, output %q", err, out)
		})
		t.Logf("%s: %v after the change", what, time.Since(t0).Round(time.Millisecond))
	}
	expect("refused: Meshlet client declares nothing", false)
	if denied := d.Metric(`meshless_connection_failures_total{reason="denied"}`); denied < 1 {
		t.Errorf("denied counted %v, want at least 1", denied)
	}
	declare(true)
	expect("allowed: Meshlet client declares web/web", true)
	declare(false)
	expect("refused again: the declaration withdrawn", false)
	if err := meshlets.Delete(ctx, "web", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	expect("allowed: no Meshlet governs web", true)
	if err := c.Client.CoreV1().Pods(ns).Delete(ctx, cli.Name, metav1.DeleteOptions{GracePeriodSeconds: ptr(int64(1))}); err != nil {
		t.Fatal(err)
	}
}

// execInPod runs argv in pod p's only container (crictl exec, from the
// node netns where containerd's streaming server listens).
func (n *Node) execInPod(ctx context.Context, p *corev1.Pod, argv ...string) (string, error) {
	sandbox, _, err := n.SandboxNetns(p.Namespace, p.Name)
	if err != nil {
		return "", err
	}
	out, err := n.Crictl("ps", "--pod", sandbox, "-q")
	ids := strings.Fields(out)
	if err != nil || len(ids) != 1 {
		return "", fmt.Errorf("container of %s: %v %q", p.Name, err, out)
	}
	args := append([]string{"--net=" + n.Netns, "--", n.crictlBin, "--runtime-endpoint", "unix://" + n.CRISock, "--timeout", "30s", "exec", ids[0]}, argv...)
	b, err := exec.CommandContext(ctx, "nsenter", args...).CombinedOutput()
	return string(b), err
}
