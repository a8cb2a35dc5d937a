package k8s

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"net"
	"net/http"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/meshless/meshless/daemon/identity"
	"github.com/meshless/meshless/install/signer"
	"github.com/meshless/meshless/internal/testenv"
)

// webhookDNSName is what the API server expects the webhook's
// certificate to name: the Service of webhook.yaml.
const webhookDNSName = "meshless-webhook.meshless-system.svc"

// webhookSigner is the meshless-signer binary serving the /meshlet
// webhook as its Deployment does (its own service account's token, the
// flags of signer.yaml but on loopback), with webhook.yaml applied and
// its Service routed to the binary (Cluster.Route).
type webhookSigner struct {
	c     *Cluster
	p     *proc
	addr  string // the webhook's host:port
	admin string // the admin server's host:port
	roots []*x509.Certificate
}

// startWebhookSigner applies signer.yaml and webhook.yaml (the namespace
// and the CA Secret are made if missing), runs the binary, and waits
// until it wrote the caBundle and is ready. It stops when t ends.
func startWebhookSigner(ctx context.Context, t *testing.T, c *Cluster) *webhookSigner {
	t.Helper()
	root, err := repoRoot()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: signerNS}}, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	for _, f := range []string{"signer.yaml", "webhook.yaml"} {
		mustKubectl(t, c, "apply", "-f", filepath.Join(root, "install", "kubernetes", f))
	}
	// No scheduler or kubelet runs it here (the node test's kubelet
	// would try): the binary below stands for its pod.
	mustKubectl(t, c, "-n", signerNS, "delete", "--ignore-not-found", "deployment/meshless-signer")
	w := &webhookSigner{c: c, roots: webhookCA(ctx, t, c)}

	svc, err := c.Client.CoreV1().Services(signerNS).Get(ctx, "meshless-webhook", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	w.addr = "127.0.0.1:" + strconv.Itoa(freePort(t))
	w.admin = "127.0.0.1:" + strconv.Itoa(freePort(t))
	c.Route(net.JoinHostPort(svc.Spec.ClusterIP, "443"), w.addr)

	tr, err := c.Client.CoreV1().ServiceAccounts(signerNS).CreateToken(ctx, "meshless-signer",
		&authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: ptr(int64(3600))}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	kubeconfig := filepath.Join(dir, "signer.kubeconfig")
	writeFile(t, kubeconfig, []byte(c.KubeconfigFor(tr.Status.Token)))
	bin := signerBinary(t)
	t0 := time.Now()
	w.p = startLogged(t, "meshless-signer", filepath.Join(dir, "signer.log"), exec.Command(bin,
		"--kubeconfig="+kubeconfig, "--admin-addr="+w.admin, "--webhook-addr="+w.addr,
		"--webhook-service=meshless-webhook", "--webhook-config=meshless"))
	t.Cleanup(func() {
		w.p.stop(false)
		if t.Failed() {
			t.Logf("---- meshless-signer log ----\n%s", tail(w.p.log, 30))
		}
	})
	want := string(pemOf(w.roots))
	testenv.Eventually(t, 30*time.Second, func() error {
		if w.p.exited() {
			t.Fatalf("meshless-signer exited:\n%s", tail(w.p.log, 20))
		}
		cfg, err := c.Client.AdmissionregistrationV1().MutatingWebhookConfigurations().Get(ctx, "meshless", metav1.GetOptions{})
		if err != nil {
			return err
		}
		for _, wh := range cfg.Webhooks {
			if string(wh.ClientConfig.CABundle) != want {
				return fmt.Errorf("caBundle of %s: %q", wh.Name, wh.ClientConfig.CABundle)
			}
		}
		_, err = w.get("/readyz")
		return err
	})
	t.Logf("meshless-signer ready, caBundle of MutatingWebhookConfiguration meshless written, %v after start", time.Since(t0).Round(time.Millisecond))
	return w
}

// webhookCA returns the roots of the CA Secret, which it makes (as
// docs/security.md says) when the cluster has none yet.
func webhookCA(ctx context.Context, t *testing.T, c *Cluster) []*x509.Certificate {
	t.Helper()
	secrets := c.Client.CoreV1().Secrets(signerNS)
	s, err := secrets.Get(ctx, signer.DefaultCASecret, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		dir := filepath.Join(t.TempDir(), "ca")
		if _, err := identity.InitCA(dir, identity.CAOptions{}); err != nil {
			t.Fatal(err)
		}
		mustKubectl(t, c, "-n", signerNS, "create", "secret", "generic", signer.DefaultCASecret,
			"--from-file=ca.crt="+filepath.Join(dir, "ca.crt"), "--from-file=ca.key="+filepath.Join(dir, "ca.key"))
		s, err = secrets.Get(ctx, signer.DefaultCASecret, metav1.GetOptions{})
	}
	if err != nil {
		t.Fatal(err)
	}
	ca, err := identity.ParseCA(s.Data[identity.CACertFile], s.Data[identity.CAKeyFile])
	if err != nil {
		t.Fatal(err)
	}
	return ca.Bundle()
}

// pemOf is the PEM of certs: what the signer writes into caBundle.
func pemOf(certs []*x509.Certificate) []byte {
	var b bytes.Buffer
	for _, c := range certs {
		_ = pem.Encode(&b, &pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
	}
	return b.Bytes()
}

// get fetches path from the signer's admin server.
func (w *webhookSigner) get(path string) (string, error) {
	resp, err := http.Get("http://" + w.admin + path)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("%s: %s %s", path, resp.Status, b)
	}
	return string(b), nil
}

// reviews is meshless_webhook_reviews_total{result}.
func (w *webhookSigner) reviews(t *testing.T, result string) int {
	t.Helper()
	m, err := w.get("/metrics")
	if err != nil {
		t.Fatal(err)
	}
	re := regexp.MustCompile(`(?m)^meshless_webhook_reviews_total\{result="` + result + `"\} (\d+)$`)
	sub := re.FindStringSubmatch(m)
	if sub == nil {
		t.Fatalf("no meshless_webhook_reviews_total{result=%q} in the metrics", result)
	}
	n, _ := strconv.Atoi(sub[1])
	return n
}

// review posts an AdmissionReview of the creation of pod to the webhook
// directly, as the API server does (TLS to the Service's name, the
// caBundle's roots), and returns the response.
func (w *webhookSigner) review(t *testing.T, pod *corev1.Pod) map[string]any {
	t.Helper()
	raw, err := json.Marshal(pod)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := json.Marshal(map[string]any{
		"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
		"request": map[string]any{
			"uid": "e2e-1", "operation": "CREATE", "namespace": pod.Namespace, "name": pod.Name,
			"kind":     map[string]string{"group": "", "version": "v1", "kind": "Pod"},
			"resource": map[string]string{"group": "", "version": "v1", "resource": "pods"},
			"object":   json.RawMessage(raw),
		},
	})
	roots := x509.NewCertPool()
	for _, r := range w.roots {
		roots.AddCert(r)
	}
	hc := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: roots, ServerName: webhookDNSName},
	}}
	defer hc.CloseIdleConnections()
	resp, err := hc.Post("https://"+w.addr+"/meshlet-dir", "application/json", bytes.NewReader(body))
	if err != nil {
		t.Fatalf("review: %v", err)
	}
	defer resp.Body.Close()
	var out struct {
		Response map[string]any `json:"response"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil || out.Response == nil {
		t.Fatalf("review answer: %v", err)
	}
	return out.Response
}
