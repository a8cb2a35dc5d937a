package signer

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"log/slog"
	"strings"
	"sync"
	"testing"

	certificatesv1 "k8s.io/api/certificates/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/meshless/meshless/daemon/identity"
)

// logCount counts log records by message.
type logCount struct {
	mu sync.Mutex
	n  map[string]int
}

func (l *logCount) Enabled(context.Context, slog.Level) bool { return true }
func (l *logCount) Handle(_ context.Context, r slog.Record) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.n[r.Message]++
	return nil
}
func (l *logCount) WithAttrs([]slog.Attr) slog.Handler { return l }
func (l *logCount) WithGroup(string) slog.Handler      { return l }
func (l *logCount) count(msg string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.n[msg]
}

type testSigner struct {
	*Signer
	cs   *fake.Clientset
	logs *logCount
	root *identity.CA // the CA in use
}

// newTestSigner is a Signer over a fake clientset holding the daemon's
// pod, with a CA in use, not running: tests call handle.
func newTestSigner(t *testing.T) *testSigner {
	t.Helper()
	ca, err := identity.NewCA(identity.CAOptions{})
	if err != nil {
		t.Fatal(err)
	}
	cs := fake.NewClientset(daemonPod())
	logs := &logCount{n: map[string]int{}}
	s, err := New(cs, Options{Logger: slog.New(logs)})
	if err != nil {
		t.Fatal(err)
	}
	s.ca.cur.Store(&authority{CA: ca})
	return &testSigner{Signer: s, cs: cs, logs: logs, root: ca}
}

// add puts csr into the fake API server and the signer's cache.
func (s *testSigner) add(t *testing.T, csr *certificatesv1.CertificateSigningRequest) {
	t.Helper()
	created, err := s.cs.CertificatesV1().CertificateSigningRequests().Create(context.Background(), csr, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.csrs.GetStore().Add(created); err != nil {
		t.Fatal(err)
	}
}

func (s *testSigner) get(t *testing.T, name string) *certificatesv1.CertificateSigningRequest {
	t.Helper()
	csr, err := s.cs.CertificatesV1().CertificateSigningRequests().Get(context.Background(), name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return csr
}

func goodRequest(t *testing.T) []byte {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	req, err := identity.NewNodeCSR(identity.IssueOptions{}, "n1", key)
	if err != nil {
		t.Fatal(err)
	}
	return req
}

func conditionOf(csr *certificatesv1.CertificateSigningRequest, typ certificatesv1.RequestConditionType) *certificatesv1.CertificateSigningRequestCondition {
	for i, c := range csr.Status.Conditions {
		if c.Type == typ {
			return &csr.Status.Conditions[i]
		}
	}
	return nil
}

func TestHandleIssues(t *testing.T) {
	s := newTestSigner(t)
	s.add(t, daemonCSR(goodRequest(t)))
	if err := s.handle(context.Background(), "meshless-node-n1-x"); err != nil {
		t.Fatal(err)
	}
	csr := s.get(t, "meshless-node-n1-x")
	c := conditionOf(csr, certificatesv1.CertificateApproved)
	if c == nil || c.Reason != ReasonApproved || !strings.Contains(c.Message, "meshless-system/meshless-abcde") {
		t.Fatalf("approval %+v", c)
	}
	chain, err := identity.ParseCertificates(csr.Status.Certificate)
	if err != nil {
		t.Fatal(err)
	}
	if err := chain[0].CheckSignatureFrom(s.root.Certificate()); err != nil || chain[0].URIs[0].String() != "spiffe://cluster.local/meshless/node/n1" {
		t.Fatalf("certificate: %v, %v", err, chain[0].URIs)
	}
	// The stale cached copy (no certificate yet) is not handled again.
	actions := len(s.cs.Actions())
	if err := s.handle(context.Background(), "meshless-node-n1-x"); err != nil || len(s.cs.Actions()) != actions {
		t.Fatalf("handled again: %v, %d more actions", err, len(s.cs.Actions())-actions)
	}
}

// TestHandleDeniesOnce: a refused CSR gets a Denied condition with the
// reason, and one log line however often its stale copy comes back.
func TestHandleDeniesOnce(t *testing.T) {
	s := newTestSigner(t)
	csr := daemonCSR(goodRequest(t))
	csr.Spec.Username = "system:serviceaccount:default:default"
	s.add(t, csr)
	for range 3 {
		if err := s.handle(context.Background(), csr.Name); err != nil {
			t.Fatal(err)
		}
	}
	got := s.get(t, csr.Name)
	c := conditionOf(got, certificatesv1.CertificateDenied)
	if c == nil || c.Reason != ReasonNotDaemon || !strings.Contains(c.Message, "system:serviceaccount:default:default") || len(got.Status.Certificate) > 0 {
		t.Fatalf("denial %+v, certificate %d bytes", c, len(got.Status.Certificate))
	}
	if n := s.logs.count("csr denied"); n != 1 {
		t.Errorf("denial logged %d times, want once", n)
	}
}

// TestHandleFailsApprovedByOthers: a CSR someone else approved is checked
// all the same; a bad one gets Failed (Denied cannot join Approved).
func TestHandleFailsApprovedByOthers(t *testing.T) {
	s := newTestSigner(t)
	csr := daemonCSR(goodRequest(t))
	csr.Spec.Extra = nil // a plain token
	csr.Status.Conditions = []certificatesv1.CertificateSigningRequestCondition{{
		Type: certificatesv1.CertificateApproved, Status: corev1.ConditionTrue, Reason: "KubectlApprove"}}
	s.add(t, csr)
	if err := s.handle(context.Background(), csr.Name); err != nil {
		t.Fatal(err)
	}
	got := s.get(t, csr.Name)
	if c := conditionOf(got, certificatesv1.CertificateFailed); c == nil || c.Reason != ReasonNotPodBound || len(got.Status.Certificate) > 0 {
		t.Fatalf("conditions %+v, certificate %d bytes", got.Status.Conditions, len(got.Status.Certificate))
	}
}

// TestHandleWaitsForCA: without a CA the CSR is retried, not decided.
func TestHandleWaitsForCA(t *testing.T) {
	s := newTestSigner(t)
	s.ca.cur.Store(nil)
	s.add(t, daemonCSR(goodRequest(t)))
	if err := s.handle(context.Background(), "meshless-node-n1-x"); err == nil {
		t.Fatal("handled without a CA")
	}
	if got := s.get(t, "meshless-node-n1-x"); len(got.Status.Conditions) != 0 {
		t.Fatalf("decided without a CA: %+v", got.Status.Conditions)
	}
	if s.Ready() {
		t.Error("ready without a CA")
	}
}

// TestHandleIgnoresOthers: other signers' CSRs and finished ones are left
// alone.
func TestHandleIgnoresOthers(t *testing.T) {
	s := newTestSigner(t)
	other := daemonCSR(goodRequest(t))
	other.Name, other.Spec.SignerName = "kubelet", "kubernetes.io/kube-apiserver-client-kubelet"
	done := daemonCSR(goodRequest(t))
	done.Name = "done"
	done.Status.Conditions = []certificatesv1.CertificateSigningRequestCondition{{Type: certificatesv1.CertificateDenied, Status: corev1.ConditionTrue}}
	s.add(t, other)
	s.add(t, done)
	actions := len(s.cs.Actions())
	for _, name := range []string{"kubelet", "done", "absent"} {
		if err := s.handle(context.Background(), name); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
	}
	if n := len(s.cs.Actions()) - actions; n != 0 {
		t.Fatalf("%d API calls for CSRs that are none of the signer's business", n)
	}
}
