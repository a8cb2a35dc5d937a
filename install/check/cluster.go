package check

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/meshless/meshless/daemon/certclient"
	"github.com/meshless/meshless/daemon/meshlet"
)

// Names of what install/kubernetes makes.
const (
	signerDeployment = "meshless-signer"
	daemonSet        = "meshless"
)

// ErrNoCluster means no kubeconfig was given or found and the process is
// not in a pod: the cluster checks are skipped.
var ErrNoCluster = errors.New("no cluster configured")

// RESTConfig finds the cluster: the kubeconfig at path, else $KUBECONFIG
// or ~/.kube/config (kubectl's rules), else the in-cluster service
// account; ErrNoCluster when there is none of them. It says which it used.
func RESTConfig(path string) (*rest.Config, string, error) {
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	rules.ExplicitPath = path
	cc := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, &clientcmd.ConfigOverrides{})
	cfg, err := cc.ClientConfig()
	if err == nil {
		from := path
		if from == "" {
			from = strings.Join(rules.GetLoadingPrecedence(), ":")
		}
		return cfg, "kubeconfig " + from, nil
	}
	if path != "" || !clientcmd.IsEmptyConfig(err) {
		return nil, "", fmt.Errorf("kubeconfig: %w", err)
	}
	cfg, err = rest.InClusterConfig()
	if errors.Is(err, rest.ErrNotInCluster) {
		return nil, "", ErrNoCluster
	}
	if err != nil {
		return nil, "", fmt.Errorf("in-cluster config: %w", err)
	}
	return cfg, "in-cluster service account", nil
}

// SkippedCluster is the one line the report has when there is no cluster.
func SkippedCluster() []Check {
	return []Check{{"cluster", func(context.Context) Result {
		return skip("no cluster configured (pass --kubeconfig, set KUBECONFIG, or run in a pod); cluster checks skipped")
	}}}
}

// ClusterChecks returns the cluster's checks; namespace is Meshless's
// (certclient.DefaultNamespace when empty). from says how the cluster was
// found, for the first line.
func ClusterChecks(cs kubernetes.Interface, namespace, from string) []Check {
	if namespace == "" {
		namespace = certclient.DefaultNamespace
	}
	return []Check{
		{"cluster: apiserver", func(context.Context) Result { return checkAPIServer(cs, from) }},
		{"cluster: Meshlet CRD", func(context.Context) Result { return checkCRD(cs) }},
		{"cluster: signer", func(ctx context.Context) Result { return checkSigner(ctx, cs, namespace) }},
		{"cluster: daemonset", func(ctx context.Context) Result { return checkDaemonSet(ctx, cs, namespace) }},
	}
}

func checkAPIServer(cs kubernetes.Interface, from string) Result {
	v, err := cs.Discovery().ServerVersion()
	if err != nil {
		return fail("check the kubeconfig's server and credentials (kubectl version)", "%s: %v", from, err)
	}
	return ok("Kubernetes %s (%s)", v.GitVersion, from)
}

// checkCRD passes when the API server serves meshlets in the Meshlet
// group version: the CRD is installed and established.
func checkCRD(cs kubernetes.Interface) Result {
	const fix = "kubectl apply -f install/kubernetes/meshlet-crd.yaml"
	rl, err := cs.Discovery().ServerResourcesForGroupVersion(meshlet.APIVersion)
	if apierrors.IsNotFound(err) {
		return fail(fix, "%s is not served", meshlet.APIVersion)
	}
	if err != nil {
		return fail("check the API server (kubectl api-resources)", "discover %s: %v", meshlet.APIVersion, err)
	}
	if !slices.ContainsFunc(rl.APIResources, func(r metav1.APIResource) bool { return r.Name == meshlet.Resource }) {
		return fail(fix, "%s has no %s resource", meshlet.APIVersion, meshlet.Resource)
	}
	return ok("%s.%s served", meshlet.Resource, meshlet.APIVersion)
}

// checkSigner passes when the signer's Deployment has an available
// replica (its readiness probe is the signer's /readyz) and the CA bundle
// it publishes for the daemons is there.
func checkSigner(ctx context.Context, cs kubernetes.Interface, ns string) Result {
	d, err := cs.AppsV1().Deployments(ns).Get(ctx, signerDeployment, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return fail("create the meshless-ca Secret, then kubectl apply -f install/kubernetes/signer.yaml (docs/security.md)",
			"no Deployment %s/%s", ns, signerDeployment)
	}
	if err != nil {
		return fail(readFix("deployments", ns), "get Deployment %s/%s: %v", ns, signerDeployment, err)
	}
	if d.Status.AvailableReplicas < 1 {
		return fail(fmt.Sprintf("kubectl -n %s describe deployment %s; kubectl -n %s logs deployment/%s", ns, signerDeployment, ns, signerDeployment),
			"Deployment %s/%s: %d of %d replicas available", ns, signerDeployment, d.Status.AvailableReplicas, replicas(d.Spec.Replicas))
	}
	cm, err := cs.CoreV1().ConfigMaps(ns).Get(ctx, certclient.DefaultBundleConfigMap, metav1.GetOptions{})
	if err != nil && !apierrors.IsNotFound(err) {
		return fail(readFix("configmaps", ns), "get ConfigMap %s/%s: %v", ns, certclient.DefaultBundleConfigMap, err)
	}
	if err != nil || cm.Data[certclient.BundleKey] == "" {
		return fail(fmt.Sprintf("check the Secret %s/meshless-ca and the signer's log (kubectl -n %s logs deployment/%s)", ns, ns, signerDeployment),
			"the signer runs but has not published its CA in ConfigMap %s/%s", ns, certclient.DefaultBundleConfigMap)
	}
	roots := strings.Count(cm.Data[certclient.BundleKey], "BEGIN CERTIFICATE")
	return ok("Deployment %s/%s available (%d/%d), CA bundle published (%d roots)",
		ns, signerDeployment, d.Status.AvailableReplicas, replicas(d.Spec.Replicas), roots)
}

// checkDaemonSet passes when every node that should run the daemon runs a
// ready one.
func checkDaemonSet(ctx context.Context, cs kubernetes.Interface, ns string) Result {
	ds, err := cs.AppsV1().DaemonSets(ns).Get(ctx, daemonSet, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return fail("kubectl apply -f install/kubernetes/meshless.yaml", "no DaemonSet %s/%s", ns, daemonSet)
	}
	if err != nil {
		return fail(readFix("daemonsets", ns), "get DaemonSet %s/%s: %v", ns, daemonSet, err)
	}
	s := ds.Status
	if s.DesiredNumberScheduled == 0 || s.NumberReady < s.DesiredNumberScheduled {
		return fail(fmt.Sprintf("kubectl -n %s get pods -l app.kubernetes.io/name=meshless -o wide; run meshlessctl check on the nodes whose pod is not ready", ns),
			"DaemonSet %s/%s: %d of %d nodes ready", ns, daemonSet, s.NumberReady, s.DesiredNumberScheduled)
	}
	return ok("DaemonSet %s/%s: %d of %d nodes ready", ns, daemonSet, s.NumberReady, s.DesiredNumberScheduled)
}

func replicas(p *int32) int32 {
	if p == nil {
		return 1
	}
	return *p
}

func readFix(resource, ns string) string {
	return fmt.Sprintf("use credentials that can get %s in %s (kubectl auth can-i get %s -n %s)", resource, ns, resource, ns)
}
