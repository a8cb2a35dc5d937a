package identity

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"net/url"
	"sync"
	"testing"
	"time"
)

// fakeClock is a settable clock for certificates, sources and handshakes.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

// newClock starts at the real time, so that crypto/tls's own uses of the
// wall clock (ticket key rotation) stay consistent with it.
func newClock() *fakeClock { return &fakeClock{t: time.Now().Truncate(time.Second)} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// mustCA makes a CA that became valid a month before clk's time, so that
// tests can issue certificates in the past.
func mustCA(t testing.TB, clk *fakeClock) *CA {
	t.Helper()
	monthAgo := func() time.Time { return clk.Now().Add(-30 * 24 * time.Hour) }
	ca, err := NewCA(CAOptions{Now: monthAgo})
	if err != nil {
		t.Fatal(err)
	}
	return ca
}

// issue is ca.NewNodeMaterial at clk's time.
func issue(t testing.TB, ca *CA, node string, clk *fakeClock) *Material {
	t.Helper()
	m, err := ca.NewNodeMaterial(node, IssueOptions{Now: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// leafSpec describes a certificate that the package itself would never
// issue, for the refusal tests.
type leafSpec struct {
	uris      []string
	dns       []string
	notBefore time.Time
	notAfter  time.Time
	eku       []x509.ExtKeyUsage
	isCA      bool
}

// signLeaf has ca sign spec for a fresh P-256 key and returns the chain
// and key as a tls.Certificate.
func signLeaf(t testing.TB, ca *CA, spec leafSpec) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial, err := randomSerial()
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: "test"},
		DNSNames:              spec.dns,
		NotBefore:             spec.notBefore,
		NotAfter:              spec.notAfter,
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           spec.eku,
		BasicConstraintsValid: true,
		IsCA:                  spec.isCA,
	}
	if spec.isCA {
		tmpl.KeyUsage |= x509.KeyUsageCertSign
	}
	if tmpl.ExtKeyUsage == nil {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}
	}
	for _, u := range spec.uris {
		pu, err := url.Parse(u)
		if err != nil {
			t.Fatal(err)
		}
		tmpl.URIs = append(tmpl.URIs, pu)
	}
	leaf, err := ca.sign(tmpl, key.Public())
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{leaf.Raw}, PrivateKey: key, Leaf: leaf}
}

// validSpec is a node certificate for node valid around clk's time.
func validSpec(clk *fakeClock, uri string) leafSpec {
	now := clk.Now()
	return leafSpec{uris: []string{uri}, notBefore: now.Add(-time.Hour), notAfter: now.Add(time.Hour)}
}

func nodeURI(node string) string { return "spiffe://cluster.local/meshless/node/" + node }

// keyOf is the private key of a tls.Certificate as a crypto.Signer.
func keyOf(c tls.Certificate) crypto.Signer { return c.PrivateKey.(crypto.Signer) }

// keyOfAny is a private key of any type as a crypto.Signer, nil if not.
func keyOfAny(k any) crypto.Signer {
	s, _ := k.(crypto.Signer)
	return s
}
