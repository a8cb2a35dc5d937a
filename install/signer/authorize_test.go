package signer

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"net/url"
	"testing"
	"time"

	certificatesv1 "k8s.io/api/certificates/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"github.com/meshless/meshless/daemon/certclient"
	"github.com/meshless/meshless/daemon/identity"
)

const daemonUser = "system:serviceaccount:meshless-system:meshless"

// daemonPod is the pod of the daemon's token in these tests.
func daemonPod() *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: "meshless-system", Name: "meshless-abcde", UID: "uid-1"},
		Spec:       corev1.PodSpec{NodeName: "n1", ServiceAccountName: "meshless"},
		Status:     corev1.PodStatus{Phase: corev1.PodRunning},
	}
}

// daemonCSR is a CSR as the API server records it for the daemon pod's
// pod-bound token.
func daemonCSR(req []byte) *certificatesv1.CertificateSigningRequest {
	return &certificatesv1.CertificateSigningRequest{
		ObjectMeta: metav1.ObjectMeta{Name: "meshless-node-n1-x", UID: "csr-uid"},
		Spec: certificatesv1.CertificateSigningRequestSpec{
			Request:    req,
			SignerName: certclient.SignerName,
			Usages:     certclient.Usages(),
			Username:   daemonUser,
			Extra: map[string]certificatesv1.ExtraValue{
				extraPodName:  {"meshless-abcde"},
				extraPodUID:   {"uid-1"},
				extraNodeName: {"n1"},
			},
		},
	}
}

func TestAuthorize(t *testing.T) {
	opts := Options{}.withDefaults()
	cases := []struct {
		name   string
		csr    func(*certificatesv1.CertificateSigningRequest)
		pod    func(*corev1.Pod)
		podErr error
		want   string // refusal reason; "" approves
		err    bool   // retried, not refused
	}{
		{name: "the daemon's pod"},
		{name: "another service account", csr: func(c *certificatesv1.CertificateSigningRequest) {
			c.Spec.Username = "system:serviceaccount:meshless-system:default"
		}, want: ReasonNotDaemon},
		{name: "a user", csr: func(c *certificatesv1.CertificateSigningRequest) { c.Spec.Username = "admin" }, want: ReasonNotDaemon},
		{name: "no extra", csr: func(c *certificatesv1.CertificateSigningRequest) { c.Spec.Extra = nil }, want: ReasonNotPodBound},
		{name: "no node name", csr: func(c *certificatesv1.CertificateSigningRequest) { delete(c.Spec.Extra, extraNodeName) }, want: ReasonNotPodBound},
		{name: "two pod names", csr: func(c *certificatesv1.CertificateSigningRequest) {
			c.Spec.Extra[extraPodName] = certificatesv1.ExtraValue{"a", "b"}
		}, want: ReasonNotPodBound},
		{name: "empty pod uid", csr: func(c *certificatesv1.CertificateSigningRequest) {
			c.Spec.Extra[extraPodUID] = certificatesv1.ExtraValue{""}
		}, want: ReasonNotPodBound},
		{name: "pod gone", podErr: apierrors.NewNotFound(schema.GroupResource{Resource: "pods"}, "meshless-abcde"), want: ReasonPodNotFound},
		{name: "pod unreadable", podErr: errors.New("connection refused"), err: true},
		{name: "pod recreated", pod: func(p *corev1.Pod) { p.UID = "uid-2" }, want: ReasonPodUIDMismatch},
		{name: "pod on another node", pod: func(p *corev1.Pod) { p.Spec.NodeName = "n2" }, want: ReasonPodNotOnNode},
		{name: "pod of another account", pod: func(p *corev1.Pod) { p.Spec.ServiceAccountName = "other" }, want: ReasonPodNotDaemon},
		{name: "pod being deleted", pod: func(p *corev1.Pod) { p.DeletionTimestamp = &metav1.Time{Time: time.Now()} }, want: ReasonPodTerminated},
		{name: "pod ended", pod: func(p *corev1.Pod) { p.Status.Phase = corev1.PodFailed }, want: ReasonPodTerminated},
		{name: "pod still pending", pod: func(p *corev1.Pod) { p.Status.Phase = corev1.PodPending }},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			csr, pod := daemonCSR(nil), daemonPod()
			if tc.csr != nil {
				tc.csr(csr)
			}
			if tc.pod != nil {
				tc.pod(pod)
			}
			get := func(_ context.Context, ns, name string) (*corev1.Pod, error) {
				if ns != "meshless-system" || name != "meshless-abcde" {
					t.Errorf("pod %s/%s read", ns, name)
				}
				return pod, tc.podErr
			}
			c, ref, err := authorize(context.Background(), opts, get, csr)
			switch {
			case tc.err:
				if err == nil || ref != nil {
					t.Fatalf("got %v, %v; want an error to retry on", ref, err)
				}
			case tc.want != "":
				if err != nil || ref == nil || ref.reason != tc.want || ref.message == "" {
					t.Fatalf("got %v, %v; want refusal %s", ref, err, tc.want)
				}
				t.Logf("%s", ref)
			default:
				if err != nil || ref != nil || c.node != "n1" || c.pod != "meshless-abcde" {
					t.Fatalf("got %+v, %v, %v; want the caller on n1", c, ref, err)
				}
			}
		})
	}
}

func TestCheckUsages(t *testing.T) {
	ds, ke, sa, ca := certificatesv1.UsageDigitalSignature, certificatesv1.UsageKeyEncipherment, certificatesv1.UsageServerAuth, certificatesv1.UsageClientAuth
	for _, tc := range []struct {
		usages []certificatesv1.KeyUsage
		ok     bool
	}{
		{[]certificatesv1.KeyUsage{ds, sa, ca}, true},
		{[]certificatesv1.KeyUsage{ca, sa, ds}, true},
		{[]certificatesv1.KeyUsage{ds, ke, sa, ca}, true},
		{[]certificatesv1.KeyUsage{ds, sa}, false},
		{[]certificatesv1.KeyUsage{sa, ca}, false},
		{nil, false},
		{[]certificatesv1.KeyUsage{ds, sa, ca, certificatesv1.UsageCertSign}, false},
		{[]certificatesv1.KeyUsage{ds, sa, ca, certificatesv1.UsageAny}, false},
	} {
		if r := checkUsages(tc.usages); (r == nil) != tc.ok {
			t.Errorf("%v: refusal %v, want ok %v", tc.usages, r, tc.ok)
		}
	}
}

func TestLifetime(t *testing.T) {
	for _, tc := range []struct {
		exp  *int32
		want time.Duration
	}{
		{nil, 24 * time.Hour},
		{new(int32(600)), 10 * time.Minute},
		{new(int32(60)), 10 * time.Minute},
		{new(int32(3600)), time.Hour},
		{new(int32(86400)), 24 * time.Hour},
		{new(int32(7 * 86400)), 24 * time.Hour},
	} {
		if got := lifetime(tc.exp); got != tc.want {
			t.Errorf("lifetime(%v) = %v, want %v", tc.exp, got, tc.want)
		}
	}
}

// TestSignRefusals: the defects of a request that identity.SignNodeCSR
// finds become refusals with their reason; the CA's own troubles are
// errors, retried.
func TestSignRefusals(t *testing.T) {
	s := newTestSigner(t)
	p256, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	rsaKey, _ := rsa.GenerateKey(rand.Reader, 2048)
	good, err := identity.NewNodeCSR(identity.IssueOptions{}, "n1", p256)
	if err != nil {
		t.Fatal(err)
	}
	raw := func(key any, uri string, dns ...string) []byte {
		u, _ := url.Parse(uri)
		der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{URIs: []*url.URL{u}, DNSNames: dns}, key)
		if err != nil {
			t.Fatal(err)
		}
		return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})
	}
	// A flipped bit in the signature: the API server refuses such a
	// request at creation, so only a unit test reaches this check.
	b, _ := pem.Decode(good)
	bad := append([]byte(nil), b.Bytes...)
	bad[len(bad)-5] ^= 1
	for _, tc := range []struct {
		name, want string
		req        []byte
	}{
		{"good", "", good},
		{"not PEM", ReasonBadRequest, []byte("hello")},
		{"bad signature", ReasonBadRequest, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: bad})},
		{"RSA", ReasonKeyType, raw(rsaKey, "spiffe://cluster.local/meshless/node/n1")},
		{"extra SAN", ReasonExtraSAN, raw(p256, "spiffe://cluster.local/meshless/node/n1", "n1.example")},
		{"other node", ReasonWrongSAN, raw(p256, "spiffe://cluster.local/meshless/node/n2")},
	} {
		pem, ref, err := s.sign(daemonCSR(tc.req), "n1")
		got := ""
		if ref != nil {
			got = ref.reason
		}
		if err != nil || got != tc.want || (tc.want == "") != (pem != nil) {
			t.Errorf("%s: refusal %v, error %v; want %q", tc.name, ref, err, tc.want)
		}
	}

	// No CA yet: wait, do not refuse.
	s.ca.cur.Store(nil)
	if _, ref, err := s.sign(daemonCSR(good), "n1"); !errors.Is(err, errNoCA) || ref != nil {
		t.Errorf("without a CA: %v, %v; want errNoCA", ref, err)
	}
	// An expired CA is the signer's problem, not the requester's.
	old, err := identity.NewCA(identity.CAOptions{TTL: time.Hour, Now: func() time.Time { return time.Now().Add(-2 * time.Hour) }})
	if err != nil {
		t.Fatal(err)
	}
	s.ca.cur.Store(&authority{CA: old})
	if _, ref, err := s.sign(daemonCSR(good), "n1"); err == nil || ref != nil {
		t.Errorf("with an expired CA: %v, %v; want an error", ref, err)
	}
}
