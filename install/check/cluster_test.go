package check

import (
	"context"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	fakediscovery "k8s.io/client-go/discovery/fake"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/meshless/meshless/daemon/certclient"
	"github.com/meshless/meshless/daemon/meshlet"
)

// The cluster checks are tested against client-go's fake clientset: the
// real API server harness (tests/k8s) runs without kubelets, so a
// Deployment would only be available by patching its status anyway.

const ns = certclient.DefaultNamespace

func signer(available int32) *appsv1.Deployment {
	one := int32(1)
	return &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: signerDeployment},
		Spec:       appsv1.DeploymentSpec{Replicas: &one},
		Status:     appsv1.DeploymentStatus{AvailableReplicas: available},
	}
}

func bundle(pem string) *corev1.ConfigMap {
	return &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: certclient.DefaultBundleConfigMap},
		Data:       map[string]string{certclient.BundleKey: pem},
	}
}

func daemons(desired, ready int32) *appsv1.DaemonSet {
	return &appsv1.DaemonSet{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: daemonSet},
		Status:     appsv1.DaemonSetStatus{DesiredNumberScheduled: desired, NumberReady: ready},
	}
}

// runCluster runs the cluster checks on a fake API server holding objs and,
// when crd, serving the Meshlet resource; it returns the results by name.
func runCluster(t *testing.T, crd bool, objs ...runtime.Object) map[string]Result {
	t.Helper()
	cs := fake.NewClientset(objs...)
	if crd {
		cs.Discovery().(*fakediscovery.FakeDiscovery).Resources = []*metav1.APIResourceList{{
			GroupVersion: meshlet.APIVersion,
			APIResources: []metav1.APIResource{{Name: meshlet.Resource, Namespaced: true, Kind: "Meshlet"}},
		}}
	}
	var out strings.Builder
	rs := Run(context.Background(), ClusterChecks(cs, "", "fake"), &out)
	t.Logf("\n%s", out.String())
	m := map[string]Result{}
	for _, r := range rs {
		m[r.Name] = r
	}
	return m
}

func TestClusterChecks(t *testing.T) {
	const pem = "-----BEGIN CERTIFICATE-----\nx\n-----END CERTIFICATE-----\n"
	cases := []struct {
		name string
		crd  bool
		objs []runtime.Object
		// want maps a check to its status and a text its line must hold.
		want map[string][2]string
	}{
		{"healthy", true, []runtime.Object{signer(1), bundle(pem), daemons(2, 2)}, map[string][2]string{
			"cluster: apiserver":   {"OK", "(fake)"},
			"cluster: Meshlet CRD": {"OK", "meshlets.ext.burningxflame.github.com/v1 served"},
			"cluster: signer":      {"OK", "available (1/1), CA bundle published (1 roots)"},
			"cluster: daemonset":   {"OK", "2 of 2 nodes ready"},
		}},
		{"no CRD", false, []runtime.Object{signer(1), bundle(pem), daemons(1, 1)}, map[string][2]string{
			"cluster: Meshlet CRD": {"FAIL", "fix: kubectl apply -f install/kubernetes/meshlet-crd.yaml"},
			"cluster: signer":      {"OK", ""},
		}},
		{"no signer", true, []runtime.Object{daemons(1, 1)}, map[string][2]string{
			"cluster: signer": {"FAIL", "no Deployment meshless-system/meshless-signer; fix: create the meshless-ca Secret"},
		}},
		{"signer not available", true, []runtime.Object{signer(0), bundle(pem), daemons(1, 1)}, map[string][2]string{
			"cluster: signer": {"FAIL", "0 of 1 replicas available; fix: kubectl -n meshless-system describe deployment meshless-signer"},
		}},
		{"bundle not published", true, []runtime.Object{signer(1), daemons(1, 1)}, map[string][2]string{
			"cluster: signer": {"FAIL", "has not published its CA"},
		}},
		{"daemon not ready everywhere", true, []runtime.Object{signer(1), bundle(pem), daemons(3, 2)}, map[string][2]string{
			"cluster: daemonset": {"FAIL", "2 of 3 nodes ready"},
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got := runCluster(t, c.crd, c.objs...)
			for name, w := range c.want {
				r := got[name]
				if string(r.Status) != w[0] || !strings.Contains(r.String(), w[1]) {
					t.Errorf("%s: got %q, want %s with %q", name, r.String(), w[0], w[1])
				}
			}
		})
	}
}

func TestRESTConfigNoCluster(t *testing.T) {
	t.Setenv("KUBECONFIG", "")
	t.Setenv("HOME", t.TempDir())
	t.Setenv("KUBERNETES_SERVICE_HOST", "")
	if _, _, err := RESTConfig(""); err != ErrNoCluster {
		t.Fatalf("RESTConfig with nothing configured: %v, want ErrNoCluster", err)
	}
	if _, _, err := RESTConfig("/nonexistent/kubeconfig"); err == nil || err == ErrNoCluster {
		t.Fatalf("RESTConfig with a missing file: %v, want an error naming it", err)
	}
}
