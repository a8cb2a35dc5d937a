package k8s

import (
	"context"
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	certificatesv1 "k8s.io/api/certificates/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/meshless/meshless/daemon/certclient"
	"github.com/meshless/meshless/daemon/identity"
	"github.com/meshless/meshless/install/signer"
	"github.com/meshless/meshless/internal/testenv"
)

// signerNS is the namespace of install/kubernetes.
const signerNS = certclient.DefaultNamespace

// signerEnv is a control plane with install/kubernetes applied (the
// webhook's configuration too, which refuses pods of a Meshlet while its
// server does not run: no test here makes one but testWebhook), a CA
// Secret made as docs/security.md says, nodes n1 and n2 and a daemon pod
// on each (created by hand: there is no scheduler or kubelet).
type signerEnv struct {
	c     *Cluster
	caDir string
	ca    *identity.CA
	stop  func() // stops the running signer
}

// newSignerEnv sets up the cluster; the signer is not started.
func newSignerEnv(ctx context.Context, t *testing.T, c *Cluster) *signerEnv {
	t.Helper()
	e := &signerEnv{c: c, caDir: filepath.Join(t.TempDir(), "ca")}
	root, err := repoRoot()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"meshless.yaml", "signer.yaml", "webhook.yaml"} {
		e.kubectl(t, "apply", "-f", filepath.Join(root, "install", "kubernetes", f))
	}
	// The controllers would make pods that never run here: no scheduler
	// binds them. Remove the noise; the RBAC objects stay.
	e.kubectl(t, "-n", signerNS, "delete", "daemonset/meshless", "deployment/meshless-signer")

	// The CA, as an operator makes it: meshlessctl ca init DIR (which is
	// identity.InitCA), then kubectl create secret generic.
	if e.ca, err = identity.InitCA(e.caDir, identity.CAOptions{}); err != nil {
		t.Fatal(err)
	}
	e.kubectl(t, "-n", signerNS, "create", "secret", "generic", signer.DefaultCASecret,
		"--from-file=ca.crt="+filepath.Join(e.caDir, "ca.crt"), "--from-file=ca.key="+filepath.Join(e.caDir, "ca.key"))

	c.CreateNode(ctx, "n1", "198.18.0.1", "198.19.1.0/24")
	c.CreateNode(ctx, "n2", "198.18.0.2", "198.19.2.0/24")
	e.createPod(ctx, t, signerNS, "meshless-n1", certclient.DefaultServiceAccount, "n1")
	e.createPod(ctx, t, signerNS, "meshless-n2", certclient.DefaultServiceAccount, "n2")
	return e
}

func (e *signerEnv) kubectl(t *testing.T, args ...string) string {
	t.Helper()
	out, err := e.c.Kubectl(args...)
	if err != nil {
		t.Fatalf("kubectl %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

// createPod creates a pod bound to node, as the scheduler would leave it.
func (e *signerEnv) createPod(ctx context.Context, t *testing.T, ns, name, sa, node string) *corev1.Pod {
	t.Helper()
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Spec: corev1.PodSpec{
			ServiceAccountName: sa,
			NodeName:           node,
			Containers:         []corev1.Container{{Name: "c", Image: "meshless/meshless:dev"}},
		},
	}
	p, err := e.c.Client.CoreV1().Pods(ns).Create(ctx, p, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("create pod %s/%s: %v", ns, name, err)
	}
	return p
}

// recreatePod deletes the pod at once (no kubelet to wait for) and
// creates one of the same name, which gets a new UID.
func (e *signerEnv) recreatePod(ctx context.Context, t *testing.T, old *corev1.Pod) *corev1.Pod {
	t.Helper()
	pods := e.c.Client.CoreV1().Pods(old.Namespace)
	if err := pods.Delete(ctx, old.Name, metav1.DeleteOptions{GracePeriodSeconds: new(int64)}); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 30*time.Second, func() error {
		if _, err := pods.Get(ctx, old.Name, metav1.GetOptions{}); err == nil {
			return fmt.Errorf("pod %s still there", old.Name)
		}
		return nil
	})
	p := e.createPod(ctx, t, old.Namespace, old.Name, old.Spec.ServiceAccountName, old.Spec.NodeName)
	if p.UID == old.UID {
		t.Fatal("recreated pod has the old UID")
	}
	return p
}

// token is a service-account token made with the TokenRequest API, bound
// to obj (a Pod or a Node) unless obj is nil: what the kubelet mounts
// into a pod is a pod-bound one.
func (e *signerEnv) token(ctx context.Context, t *testing.T, ns, sa string, obj metav1.Object, kind string) string {
	t.Helper()
	spec := authenticationv1.TokenRequestSpec{ExpirationSeconds: new(int64(3600))}
	if obj != nil {
		spec.BoundObjectRef = &authenticationv1.BoundObjectReference{Kind: kind, APIVersion: "v1", Name: obj.GetName(), UID: obj.GetUID()}
	}
	tr, err := e.c.Client.CoreV1().ServiceAccounts(ns).CreateToken(ctx, sa, &authenticationv1.TokenRequest{Spec: spec}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("token for %s/%s: %v", ns, sa, err)
	}
	return tr.Status.Token
}

// podToken is the token the kubelet would give pod.
func (e *signerEnv) podToken(ctx context.Context, t *testing.T, pod *corev1.Pod) string {
	return e.token(ctx, t, pod.Namespace, pod.Spec.ServiceAccountName, pod, "Pod")
}

// config is a client configuration that authenticates with token, not
// throttled by client-go (the tests measure the signer, not the client).
func (e *signerEnv) config(token string) *rest.Config {
	return &rest.Config{
		Host:            e.c.APIURL(),
		BearerToken:     token,
		TLSClientConfig: rest.TLSClientConfig{CAFile: e.c.path("certs", "apiserver.crt"), ServerName: "kubernetes"},
		QPS:             -1,
	}
}

func (e *signerEnv) pod(ctx context.Context, t *testing.T, ns, name string) *corev1.Pod {
	t.Helper()
	p, err := e.c.Client.CoreV1().Pods(ns).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// startSigner runs the signer in this process with a token of its own
// service account (so install/kubernetes/signer.yaml's RBAC is what it
// has), its client configuration made by signer.RESTConfig with qps and
// burst, and waits until it is ready. t must be the top-level test: the
// signer runs until e.stop or the end of the test.
func (e *signerEnv) startSigner(ctx context.Context, t *testing.T, qps float32, burst int) {
	t.Helper()
	kubeconfig := filepath.Join(t.TempDir(), "signer.kubeconfig")
	writeFile(t, kubeconfig, []byte(e.c.KubeconfigFor(e.token(ctx, t, signerNS, "meshless-signer", nil, ""))))
	cfg, err := signer.RESTConfig(kubeconfig, qps, burst)
	if err != nil {
		t.Fatal(err)
	}
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	s, err := signer.New(cs, signer.Options{Logger: slog.New(slog.NewTextHandler(testWriter{t}, nil))})
	if err != nil {
		t.Fatal(err)
	}
	sctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- s.Run(sctx) }()
	e.stop = func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("signer Run: %v", err)
		}
		e.stop = nil
	}
	testenv.Eventually(t, 30*time.Second, func() error {
		if !s.Ready() {
			return fmt.Errorf("signer not ready")
		}
		return nil
	})
}

// allowCSRCreate lets a service account create CSRs, as some other
// component of a cluster may: what the signer must then refuse.
func (e *signerEnv) allowCSRCreate(ctx context.Context, t *testing.T, ns, sa string) {
	t.Helper()
	rbac := e.c.Client.RbacV1()
	name := "test-csr-creator"
	if _, err := rbac.ClusterRoles().Get(ctx, name, metav1.GetOptions{}); err != nil {
		_, err := rbac.ClusterRoles().Create(ctx, &rbacv1.ClusterRole{
			ObjectMeta: metav1.ObjectMeta{Name: name},
			Rules: []rbacv1.PolicyRule{{APIGroups: []string{"certificates.k8s.io"}, Resources: []string{"certificatesigningrequests"},
				Verbs: []string{"create", "get", "delete"}}},
		}, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
	}
	_, err := rbac.ClusterRoleBindings().Create(ctx, &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: name + "-" + ns + "-" + sa},
		RoleRef:    rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: name},
		Subjects:   []rbacv1.Subject{{Kind: "ServiceAccount", Namespace: ns, Name: sa}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
}

// submit creates a CSR of the Meshless signer with token's identity.
func (e *signerEnv) submit(ctx context.Context, t *testing.T, token string, req []byte, usages []certificatesv1.KeyUsage, exp *int32) string {
	t.Helper()
	cs, err := kubernetes.NewForConfig(e.config(token))
	if err != nil {
		t.Fatal(err)
	}
	csr, err := cs.CertificatesV1().CertificateSigningRequests().Create(ctx, &certificatesv1.CertificateSigningRequest{
		ObjectMeta: metav1.ObjectMeta{GenerateName: "test-"},
		Spec: certificatesv1.CertificateSigningRequestSpec{
			Request: req, SignerName: certclient.SignerName, Usages: usages, ExpirationSeconds: exp,
		},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("create csr: %v", err)
	}
	return csr.Name
}

// decided waits until the signer decided the CSR and returns it.
func (e *signerEnv) decided(ctx context.Context, t *testing.T, name string) *certificatesv1.CertificateSigningRequest {
	t.Helper()
	var csr *certificatesv1.CertificateSigningRequest
	testenv.Eventually(t, 30*time.Second, func() error {
		var err error
		csr, err = e.c.Client.CertificatesV1().CertificateSigningRequests().Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		for _, c := range csr.Status.Conditions {
			if c.Type == certificatesv1.CertificateDenied || c.Type == certificatesv1.CertificateFailed {
				return nil
			}
		}
		if len(csr.Status.Certificate) > 0 {
			return nil
		}
		return fmt.Errorf("csr %s not decided: %+v", name, csr.Status.Conditions)
	})
	return csr
}

// testWriter sends the signer's log to the test's.
type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}
