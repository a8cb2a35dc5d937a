package k8s

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/meshless/meshless/daemon/kube"
	"github.com/meshless/meshless/daemon/routes"
)

// testManifests checks install/kubernetes against the real apiserver:
// server-side dry-run with kubectl (the apiserver's validation and
// admission, e.g. the DaemonSet's capabilities and the priority class),
// then a real apply, and that the ClusterRole is enough for discovery and
// no more. The phases build on each other, so a failed one ends the test.
func testManifests(ctx context.Context, t *testing.T, c *Cluster) {
	root, err := repoRoot()
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(root, "install", "kubernetes")
	manifests := []string{filepath.Join(dir, "meshless.yaml"), filepath.Join(dir, "uninstall.yaml"), filepath.Join(dir, "meshlet-crd.yaml"),
		filepath.Join(dir, "signer.yaml"), filepath.Join(dir, "webhook.yaml")}

	dryRunManifests(t, c, manifests)
	saKubeconfig := applyManifest(ctx, t, c, manifests[0])
	checkServiceAccountRights(t, c, saKubeconfig)
	discoverAsServiceAccount(ctx, t, saKubeconfig)
	waitDaemonSetPods(ctx, t, c)
}

// mustKubectl runs kubectl and fails t if it fails.
func mustKubectl(t *testing.T, c *Cluster, args ...string) string {
	t.Helper()
	out, err := c.Kubectl(args...)
	if err != nil {
		t.Fatalf("kubectl %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

// dryRunManifests applies each manifest with --dry-run=server.
func dryRunManifests(t *testing.T, c *Cluster, manifests []string) {
	// Namespaced objects of a dry-run cannot land in a namespace that the
	// same dry-run only pretends to create: create the namespace first.
	mustKubectl(t, c, "create", "namespace", "meshless-system", "--save-config")
	for _, f := range manifests {
		out := mustKubectl(t, c, "apply", "--dry-run=server", "-f", f)
		t.Logf("kubectl apply --dry-run=server -f %s:\n%s", filepath.Base(f), strings.TrimSpace(out))
		if !strings.Contains(out, "(server dry run)") {
			t.Errorf("no server dry run in the output")
		}
	}
}

// applyManifest applies manifest for real and returns a kubeconfig with a
// token of its meshless ServiceAccount.
func applyManifest(ctx context.Context, t *testing.T, c *Cluster, manifest string) (saKubeconfig string) {
	out := mustKubectl(t, c, "apply", "-f", manifest)
	t.Logf("kubectl apply:\n%s", strings.TrimSpace(out))
	if !strings.Contains(out, "daemonset.apps/meshless created") {
		t.Errorf("DaemonSet not created")
	}
	tr, err := c.Client.CoreV1().ServiceAccounts("meshless-system").CreateToken(ctx, "meshless",
		&authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: ptr(int64(3600))}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("token for the meshless ServiceAccount: %v", err)
	}
	saKubeconfig = filepath.Join(t.TempDir(), "meshless.kubeconfig")
	if err := os.WriteFile(saKubeconfig, []byte(c.KubeconfigFor(tr.Status.Token)), 0o600); err != nil {
		t.Fatal(err)
	}
	return saKubeconfig
}

// checkServiceAccountRights checks with `kubectl auth can-i` that the
// ServiceAccount may read what discovery watches and nothing else.
func checkServiceAccountRights(t *testing.T, c *Cluster, saKubeconfig string) {
	canI := func(verb, resource string, want bool) {
		t.Helper()
		args := []string{"--kubeconfig=" + saKubeconfig, "auth", "can-i", verb, resource, "--all-namespaces"}
		if r, sub, ok := strings.Cut(resource, "/"); ok { // "pods/exec" would name a pod
			args = append(args[:4], r, "--all-namespaces", "--subresource="+sub)
		}
		out, _ := c.Kubectl(args...)
		got := strings.TrimSpace(out) == "yes"
		if got != want {
			t.Errorf("meshless ServiceAccount: can-i %s %s = %q, want %v", verb, resource, strings.TrimSpace(out), want)
		}
	}
	for _, r := range []string{"services", "pods", "nodes", "endpointslices.discovery.k8s.io"} {
		for _, v := range []string{"get", "list", "watch"} {
			canI(v, r, true)
		}
		for _, v := range []string{"create", "update", "patch", "delete"} {
			canI(v, r, false)
		}
	}
	meshletRBAC(canI)
	for _, r := range []string{"secrets", "configmaps", "endpoints", "serviceaccounts", "nodes/proxy", "pods/log", "pods/status"} {
		canI("get", r, false)
	}
	canI("create", "pods/exec", false)
	canI("create", "serviceaccounts/token", false)
}

// discoverAsServiceAccount runs the discovery source with exactly the
// ServiceAccount's rights: it must see testDiscovery's nodes and Service
// web without an error.
func discoverAsServiceAccount(ctx context.Context, t *testing.T, saKubeconfig string) {
	cfg, err := kube.RESTConfig(saKubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	rec := &models{}
	src, err := kube.New(cfg, rec.on, nil)
	if err != nil {
		t.Fatal(err)
	}
	sctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- src.Run(sctx) }()
	defer func() { cancel(); <-done }()
	rec.waitModel(t, "model as the meshless ServiceAccount", 30*time.Second, func(m routes.Model) bool {
		_, ok := findService(m, "default", "web")
		return ok && len(m.Nodes) == 3
	})
	if err := src.LastError(); err != nil {
		t.Errorf("LastError as the meshless ServiceAccount: %v", err)
	}
}

// waitDaemonSetPods waits for the DaemonSet controller to accept the
// template: one pod per node (no kubelets here, so they stay Pending).
func waitDaemonSetPods(ctx context.Context, t *testing.T, c *Cluster) {
	deadline := time.Now().Add(30 * time.Second)
	for {
		ds, err := c.Client.AppsV1().DaemonSets("meshless-system").Get(ctx, "meshless", metav1.GetOptions{})
		if err == nil && ds.Status.DesiredNumberScheduled == 3 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("DaemonSet: %v; status %+v", err, ds.Status)
		}
		time.Sleep(200 * time.Millisecond) // polling interval
	}
	pods, err := c.Client.CoreV1().Pods("meshless-system").List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("DaemonSet: %d pods created for 3 nodes", len(pods.Items))
}

func ptr[T any](v T) *T { return &v }
