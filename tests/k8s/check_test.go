package k8s

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/meshless/meshless/daemon/certclient"
	"github.com/meshless/meshless/install/check"
)

// clusterReport runs `meshlessctl check --node=false` against c and returns
// each line by check name.
func clusterReport(ctx context.Context, t *testing.T, c *Cluster) map[string]string {
	t.Helper()
	var out, errb strings.Builder
	err := check.Main(ctx, []string{"--node=false", "--kubeconfig", c.Kubeconfig}, &out, &errb)
	if _, failed := err.(*check.FailedError); err != nil && !failed {
		t.Fatalf("check: %v (%s)", err, errb.String())
	}
	lines := map[string]string{}
	for _, l := range strings.Split(out.String(), "\n") {
		if len(l) > 30 && l[4:6] == "  " {
			lines[strings.TrimSpace(l[6:30])] = l
		}
	}
	return lines
}

// waitLine polls the report until the check's line starts with status and
// holds text, and fails t with the last line otherwise.
func waitLine(ctx context.Context, t *testing.T, c *Cluster, name, status, text string) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		l := clusterReport(ctx, t, c)[name]
		if strings.HasPrefix(l, status+" ") && strings.Contains(l, text) {
			t.Logf("%s", l)
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: last line %q, want %s with %q", name, l, status, text)
		}
		time.Sleep(200 * time.Millisecond) // polling interval
	}
}

// TestCheckCluster runs the cluster checks of meshlessctl check against a
// real control plane: each fails while its part is missing and passes once
// the manifests of install/kubernetes are applied and the signer's pod is
// ready (status set by hand: there is no kubelet) with its CA published.
func TestCheckCluster(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a real Kubernetes control plane; not in -short")
	}
	c := StartCluster(t)
	ctx := t.Context()
	root, err := repoRoot()
	if err != nil {
		t.Fatal(err)
	}
	manifest := func(name string) string { return filepath.Join(root, "install", "kubernetes", name) }
	kubectl := func(args ...string) {
		t.Helper()
		if out, err := c.Kubectl(args...); err != nil {
			t.Fatalf("kubectl %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	r := clusterReport(ctx, t, c)
	for name, want := range map[string]string{
		"cluster: apiserver":   "OK    cluster: apiserver       Kubernetes v",
		"cluster: Meshlet CRD": "FAIL  cluster: Meshlet CRD     ext.burningxflame.github.com/v1 is not served; fix: kubectl apply -f install/kubernetes/meshlet-crd.yaml",
		"cluster: signer":      "FAIL  cluster: signer          no Deployment meshless-system/meshless-signer",
	} {
		if !strings.HasPrefix(r[name], want) {
			t.Errorf("before install: %q, want %q...", r[name], want)
		}
	}

	kubectl("apply", "-f", manifest("meshlet-crd.yaml"))
	waitLine(ctx, t, c, "cluster: Meshlet CRD", "OK", "meshlets.ext.burningxflame.github.com/v1 served")

	ns := certclient.DefaultNamespace
	if _, err := c.Client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	kubectl("apply", "-f", manifest("signer.yaml"))
	waitLine(ctx, t, c, "cluster: signer", "FAIL", "0 of 1 replicas available")

	// Play the scheduler and the kubelet for the signer's pod.
	c.CreateNode(ctx, "n1", "198.18.0.1", "198.19.1.0/24")
	pod := waitSignerPod(ctx, t, c)
	if err := c.Client.CoreV1().Pods(ns).Bind(ctx, &corev1.Binding{
		ObjectMeta: metav1.ObjectMeta{Name: pod},
		Target:     corev1.ObjectReference{Kind: "Node", Name: "n1"},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	c.SetPodStatus(ctx, ns, pod, "198.19.1.2", true)
	waitLine(ctx, t, c, "cluster: signer", "FAIL", "has not published its CA in ConfigMap meshless-system/meshless-ca-bundle")

	// What the signer publishes once it has loaded its CA.
	if _, err := c.Client.CoreV1().ConfigMaps(ns).Create(ctx, &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Name: certclient.DefaultBundleConfigMap},
		Data:       map[string]string{certclient.BundleKey: "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitLine(ctx, t, c, "cluster: signer", "OK", "available (1/1), CA bundle published (1 roots)")
	var out strings.Builder
	check.Main(ctx, []string{"--node=false", "--kubeconfig", c.Kubeconfig}, &out, &out)
	t.Logf("report with the CRD and the signer (no DaemonSet):\n%s", out.String())

	// The signer's pod stops being ready: the line fails again.
	c.SetPodStatus(ctx, ns, pod, "198.19.1.2", false)
	waitLine(ctx, t, c, "cluster: signer", "FAIL", "0 of 1 replicas available")
}

// waitSignerPod returns the name of the pod the signer's ReplicaSet made.
func waitSignerPod(ctx context.Context, t *testing.T, c *Cluster) string {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		pods, err := c.Client.CoreV1().Pods(certclient.DefaultNamespace).List(ctx, metav1.ListOptions{LabelSelector: "app.kubernetes.io/name=meshless-signer"})
		if err == nil && len(pods.Items) > 0 {
			return pods.Items[0].Name
		}
		if time.Now().After(deadline) {
			t.Fatalf("no signer pod: %v", err)
		}
		time.Sleep(200 * time.Millisecond) // polling interval
	}
}
