package identity

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"errors"
	"net"
	"net/url"
	"testing"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// csrSpec describes a certificate request to build, defects included.
type csrSpec struct {
	key     crypto.Signer
	uris    []string
	dns     []string
	ips     []net.IP
	emails  []string
	corrupt bool // flip a bit of the signature
}

func makeCSR(t *testing.T, spec csrSpec) *x509.CertificateRequest {
	t.Helper()
	tmpl := &x509.CertificateRequest{DNSNames: spec.dns, IPAddresses: spec.ips, EmailAddresses: spec.emails}
	for _, u := range spec.uris {
		pu, err := url.Parse(u)
		if err != nil {
			t.Fatal(err)
		}
		tmpl.URIs = append(tmpl.URIs, pu)
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, tmpl, spec.key)
	if err != nil {
		t.Fatal(err)
	}
	csr, err := x509.ParseCertificateRequest(der)
	if err != nil {
		t.Fatal(err)
	}
	if spec.corrupt {
		csr.Signature[len(csr.Signature)/2] ^= 0x40
	}
	return csr
}

// TestSignNodeCSR: each defect of a request is refused with its own
// error, and only with it; good requests give usable node material.
func TestSignNodeCSR(t *testing.T) {
	clk := newClock()
	ca := mustCA(t, clk)
	p256, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	p384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	_, ed, _ := ed25519.GenerateKey(rand.Reader)
	rsaKey, _ := rsa.GenerateKey(rand.Reader, 2048)
	me := nodeURI("n1")
	tests := []struct {
		name string
		spec csrSpec
		want error // nil: signed
	}{
		{"P-256", csrSpec{key: p256, uris: []string{me}}, nil},
		{"Ed25519", csrSpec{key: ed, uris: []string{me}}, nil},
		{"bad signature", csrSpec{key: p256, uris: []string{me}, corrupt: true}, ErrCSRSignature},
		{"P-384 key", csrSpec{key: p384, uris: []string{me}}, ErrCSRKeyType},
		{"RSA key", csrSpec{key: rsaKey, uris: []string{me}}, ErrCSRKeyType},
		{"DNS SAN", csrSpec{key: p256, uris: []string{me}, dns: []string{"n1.example"}}, ErrCSRExtraSAN},
		{"IP SAN", csrSpec{key: p256, uris: []string{me}, ips: []net.IP{net.IPv4(198, 18, 0, 1)}}, ErrCSRExtraSAN},
		{"email SAN", csrSpec{key: p256, uris: []string{me}, emails: []string{"n1@example.org"}}, ErrCSRExtraSAN},
		{"two URIs", csrSpec{key: p256, uris: []string{me, nodeURI("n2")}}, ErrCSRExtraSAN},
		{"another node", csrSpec{key: p256, uris: []string{nodeURI("n2")}}, ErrCSRWrongSAN},
		{"another trust domain", csrSpec{key: p256, uris: []string{"spiffe://other.example/meshless/node/n1"}}, ErrCSRWrongSAN},
		{"a workload", csrSpec{key: p256, uris: []string{"spiffe://cluster.local/ns/default/sa/web"}}, ErrCSRWrongSAN},
		{"no URI", csrSpec{key: p256}, ErrCSRWrongSAN},
	}
	all := []error{ErrCSRSignature, ErrCSRKeyType, ErrCSRExtraSAN, ErrCSRWrongSAN}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			chain, err := ca.SignNodeCSR(makeCSR(t, tt.spec), "n1", IssueOptions{Now: clk.Now})
			for _, e := range all {
				if errors.Is(err, e) != (e == tt.want) {
					t.Errorf("errors.Is(%v, %v) = %v", err, e, errors.Is(err, e))
				}
			}
			if tt.want != nil {
				if err == nil {
					t.Fatal("signed")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			m, err := NewMaterial(ca.Bundle(), chain, tt.spec.key)
			if err != nil {
				t.Fatal(err)
			}
			s, err := NewSource(Options{Node: "n1", Now: clk.Now, Logger: discardLogger()})
			if err != nil {
				t.Fatal(err)
			}
			if err := s.Set(m); err != nil {
				t.Fatal(err)
			}
			peer := newTestSource(t, ca, "n2", clk)
			mustHandshake(t, s.ServerConfig(), peer.ClientConfig("n1"))
		})
	}
}

// TestNewNodeCSRRoundTrip: what a node asks for (NewNodeCSR, as PEM) is
// what the signer grants, for the trust domain of the options.
func TestNewNodeCSRRoundTrip(t *testing.T) {
	clk := newClock()
	ca := mustCA(t, clk)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	opts := IssueOptions{TrustDomain: spiffeid.RequireTrustDomainFromString("prod.example"), Now: clk.Now}
	pemCSR, err := NewNodeCSR(opts, "n9", key)
	if err != nil {
		t.Fatal(err)
	}
	csr, err := ParseCSR(pemCSR)
	if err != nil {
		t.Fatal(err)
	}
	chain, err := ca.SignNodeCSR(csr, "n9", opts)
	if err != nil {
		t.Fatal(err)
	}
	if got := chain[0].URIs[0].String(); got != "spiffe://prod.example/meshless/node/n9" {
		t.Fatalf("issued for %s", got)
	}
	if _, err := ca.SignNodeCSR(csr, "n8", opts); !errors.Is(err, ErrCSRWrongSAN) {
		t.Fatalf("signed n9's request for caller n8: %v", err)
	}
	if _, err := ParseCSR([]byte("garbage")); err == nil {
		t.Fatal("ParseCSR accepted garbage")
	}
	p384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if _, err := NewNodeCSR(opts, "n9", p384); !errors.Is(err, ErrCSRKeyType) {
		t.Fatalf("NewNodeCSR with P-384: %v", err)
	}
}
