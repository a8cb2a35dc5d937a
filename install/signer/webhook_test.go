package signer

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	admissionv1 "k8s.io/api/admission/v1"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"

	"github.com/meshless/meshless/daemon/meshlet"
	"github.com/meshless/meshless/install/webhook"
)

// clock is a settable Options.Now.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// webhookConfig is the MutatingWebhookConfiguration of webhook.yaml,
// without caBundle.
func webhookConfig() *admissionregistrationv1.MutatingWebhookConfiguration {
	return &admissionregistrationv1.MutatingWebhookConfiguration{
		ObjectMeta: metav1.ObjectMeta{Name: DefaultWebhookConfiguration},
		Webhooks:   []admissionregistrationv1.MutatingWebhook{{Name: "a.meshless.io"}, {Name: "b.meshless.io"}},
	}
}

type webhookTest struct {
	*Signer
	cs    *fake.Clientset
	logs  *logCount
	clock *clock
}

// newWebhookTest is a signer with the webhook over a fake API server
// that holds the configuration, and a as the CA in use; not running.
func newWebhookTest(t *testing.T, a *authority, w WebhookOptions) *webhookTest {
	t.Helper()
	cs := fake.NewClientset(webhookConfig())
	logs := &logCount{n: map[string]int{}}
	clk := &clock{t: time.Now()}
	s, err := New(cs, Options{Logger: slog.New(logs), Now: clk.now, Webhook: &w})
	if err != nil {
		t.Fatal(err)
	}
	s.ca.cur.Store(a)
	return &webhookTest{Signer: s, cs: cs, logs: logs, clock: clk}
}

// caBundles returns the caBundle of each webhook of the configuration.
func (w *webhookTest) caBundles(t *testing.T) []string {
	t.Helper()
	cfg, err := w.cs.AdmissionregistrationV1().MutatingWebhookConfigurations().Get(context.Background(), DefaultWebhookConfiguration, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, wh := range cfg.Webhooks {
		out = append(out, string(wh.ClientConfig.CABundle))
	}
	return out
}

func wantBundles(t *testing.T, got []string, roots ...*x509.Certificate) {
	t.Helper()
	want := string(encodeCerts(roots))
	if len(got) != 2 || got[0] != want || got[1] != want {
		t.Errorf("caBundles %q, want both %q", got, want)
	}
}

func TestWebhookCertAndBundle(t *testing.T) {
	a1 := testAuthority(t)
	w := newWebhookTest(t, a1, WebhookOptions{})
	ctx := context.Background()
	if w.Ready() {
		t.Fatal("ready before a serving certificate")
	}
	next := w.webhook.sync(ctx)
	wantBundles(t, w.caBundles(t), a1.Bundle()...)
	c1 := w.webhook.cert.Load()
	verifyServing(t, a1, c1.Certificate, w.clock.now())
	if next != webhookResync {
		t.Errorf("next sync in %v, want %v", next, webhookResync)
	}
	// Nothing changed: a GET, no write.
	actions := len(w.cs.Actions())
	w.webhook.sync(ctx)
	for _, act := range w.cs.Actions()[actions:] {
		if act.GetVerb() != "get" {
			t.Errorf("unneeded %s", act.GetVerb())
		}
	}
	// Someone clears a caBundle: put back on the next sync.
	cfg := webhookConfig()
	cfg.Webhooks[1].ClientConfig.CABundle = []byte("x")
	cfg.Webhooks[0].ClientConfig.CABundle = encodeCerts(a1.Bundle())
	if _, err := w.cs.AdmissionregistrationV1().MutatingWebhookConfigurations().Update(ctx, cfg, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	w.webhook.sync(ctx)
	wantBundles(t, w.caBundles(t), a1.Bundle()...)

	// Renewed at half its life, and only then.
	w.clock.add(DefaultWebhookTTL/2 - time.Hour)
	w.webhook.sync(ctx)
	if w.webhook.cert.Load() != c1 {
		t.Error("renewed before half its life")
	}
	w.clock.add(time.Hour)
	w.webhook.sync(ctx)
	if c2 := w.webhook.cert.Load(); c2 == c1 || c2.Leaf.SerialNumber.Cmp(c1.Leaf.SerialNumber) == 0 {
		t.Error("not renewed at half its life")
	}
}

// TestWebhookCARotation: a new CA goes into the caBundle, with the
// previous one, before the certificate changes; the previous one leaves
// the caBundle after bundleOverlap.
func TestWebhookCARotation(t *testing.T) {
	a1, a2 := testAuthority(t), testAuthority(t)
	w := newWebhookTest(t, a1, WebhookOptions{})
	ctx := context.Background()
	w.webhook.sync(ctx)
	c1 := w.webhook.cert.Load()

	// The update of the caBundle fails: the old certificate stays.
	w.ca.cur.Store(a2)
	w.cs.PrependReactor("update", "mutatingwebhookconfigurations", func(k8stesting.Action) (bool, runtime.Object, error) {
		return true, nil, errors.New("etcd on fire")
	})
	if next := w.webhook.sync(ctx); next != time.Second {
		t.Errorf("retry in %v, want 1 s", next)
	}
	w.webhook.sync(ctx)
	if w.webhook.cert.Load() != c1 {
		t.Fatal("certificate of the new CA served before the caBundle has it")
	}
	if n := w.logs.count("webhook caBundle or certificate not updated; retrying"); n != 1 {
		t.Errorf("failure logged %d times, want once", n)
	}
	w.cs.ReactionChain = w.cs.ReactionChain[1:]
	w.webhook.sync(ctx)
	wantBundles(t, w.caBundles(t), append(a2.Bundle(), a1.Bundle()...)...)
	c2 := w.webhook.cert.Load()
	verifyServing(t, a2, c2.Certificate, w.clock.now())

	w.clock.add(bundleOverlap)
	w.webhook.sync(ctx)
	wantBundles(t, w.caBundles(t), a2.Bundle()...)
	if w.webhook.cert.Load() != c2 {
		t.Error("certificate changed again")
	}
}

// TestWebhookWithoutConfiguration: the certificate is issued anyway (an
// operator may set caBundle by hand); the missing configuration is
// logged once, with the fix.
func TestWebhookWithoutConfiguration(t *testing.T) {
	w := newWebhookTest(t, testAuthority(t), WebhookOptions{})
	if err := w.cs.AdmissionregistrationV1().MutatingWebhookConfigurations().Delete(context.Background(), DefaultWebhookConfiguration, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		w.webhook.sync(context.Background())
	}
	if w.webhook.cert.Load() == nil {
		t.Error("no certificate")
	}
	if n := w.logs.count("webhook caBundle or certificate not updated; retrying"); n != 1 {
		t.Errorf("logged %d times", n)
	}
	if !strings.Contains(w.webhook.lastErr, "not found") {
		t.Errorf("last error %q", w.webhook.lastErr)
	}
}

func TestWebhookManualCABundle(t *testing.T) {
	w := newWebhookTest(t, testAuthority(t), WebhookOptions{ManualCABundle: true})
	w.webhook.sync(context.Background())
	if w.webhook.cert.Load() == nil || len(w.cs.Actions()) != 0 {
		t.Errorf("certificate %v, API actions %v; want a certificate and no call", w.webhook.cert.Load() != nil, w.cs.Actions())
	}
}

// TestServeWebhook: over TLS, as the API server calls it (the Service's
// DNS name, the caBundle's roots), a review of a Meshlet's pod gets the
// patch; a client expecting another name refuses the certificate.
func TestServeWebhook(t *testing.T) {
	a := testAuthority(t)
	w := newWebhookTest(t, a, WebhookOptions{})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.ServeWebhook(ctx, ln) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("ServeWebhook: %v", err)
		}
	}()
	roots := x509.NewCertPool()
	for _, r := range a.Bundle() {
		roots.AddCert(r)
	}
	client := func(name string) *http.Client {
		return &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots, ServerName: name}}}
	}
	url := "https://" + ln.Addr().String() + webhook.Path
	body := podReview(t)
	if _, err := client(testDNSName).Post(url, "application/json", bytes.NewReader(body)); err == nil {
		t.Error("handshake before any certificate succeeded")
	}
	w.webhook.sync(ctx)
	resp, err := client(testDNSName).Post(url, "application/json", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var rv admissionv1.AdmissionReview
	if err := json.NewDecoder(resp.Body).Decode(&rv); err != nil || rv.Response == nil || !rv.Response.Allowed ||
		!strings.Contains(string(rv.Response.Patch), webhook.VolumeName) {
		t.Fatalf("answer %+v, %v", rv.Response, err)
	}
	if _, err := client("meshless-webhook.default.svc").Post(url, "application/json", bytes.NewReader(body)); err == nil {
		t.Error("certificate accepted for another name")
	}
	other, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if err := (&Signer{}).ServeWebhook(ctx, other); !errors.Is(err, errNoWebhook) {
		t.Errorf("without Options.Webhook: %v", err)
	}
}

func podReview(t *testing.T) []byte {
	t.Helper()
	raw, _ := json.Marshal(&corev1.Pod{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Pod"},
		ObjectMeta: metav1.ObjectMeta{Name: "web-1", Labels: map[string]string{meshlet.LabelMeshlet: "web"}},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "app"}}},
	})
	b, err := json.Marshal(&admissionv1.AdmissionReview{
		TypeMeta: metav1.TypeMeta{APIVersion: "admission.k8s.io/v1", Kind: "AdmissionReview"},
		Request: &admissionv1.AdmissionRequest{UID: "u1", Operation: admissionv1.Create,
			Resource: metav1.GroupVersionResource{Version: "v1", Resource: "pods"}, Object: runtime.RawExtension{Raw: raw}},
	})
	if err != nil {
		t.Fatal(err)
	}
	return b
}
