package signer

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"testing"
	"time"

	"github.com/meshless/meshless/daemon/identity"
)

const testDNSName = "meshless-webhook.meshless-system.svc"

// testAuthority is a CA as the Secret holds it.
func testAuthority(t *testing.T) *authority {
	t.Helper()
	s, _ := caSecret(t, "1")
	a, err := parseAuthority(s.Data["ca.crt"], s.Data["ca.key"])
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// verifyServing checks a serving certificate as the API server checks a
// webhook's: chain to a root of a, testDNSName, server auth.
func verifyServing(t *testing.T, a *authority, chain [][]byte, now time.Time) *x509.Certificate {
	t.Helper()
	var certs []*x509.Certificate
	for _, der := range chain {
		c, err := x509.ParseCertificate(der)
		if err != nil {
			t.Fatal(err)
		}
		certs = append(certs, c)
	}
	roots, inter := x509.NewCertPool(), x509.NewCertPool()
	for _, r := range a.Bundle() {
		roots.AddCert(r)
	}
	for _, c := range certs[1:] {
		inter.AddCert(c)
	}
	if _, err := certs[0].Verify(x509.VerifyOptions{DNSName: testDNSName, Roots: roots, Intermediates: inter, CurrentTime: now,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err != nil {
		t.Fatalf("serving certificate: %v", err)
	}
	return certs[0]
}

func TestIssueServing(t *testing.T) {
	a := testAuthority(t)
	now := time.Now().Truncate(time.Second) // what a certificate holds
	c, err := a.issueServing(testDNSName, time.Hour, now)
	if err != nil {
		t.Fatal(err)
	}
	leaf := verifyServing(t, a, c.Certificate, now)
	if len(c.Certificate) != 1 || c.Leaf != leaf && !c.Leaf.Equal(leaf) {
		t.Errorf("chain of %d, want the leaf alone under a root CA", len(c.Certificate))
	}
	if len(leaf.URIs)+len(leaf.IPAddresses)+len(leaf.EmailAddresses) != 0 || len(leaf.DNSNames) != 1 ||
		len(leaf.ExtKeyUsage) != 1 || leaf.ExtKeyUsage[0] != x509.ExtKeyUsageServerAuth || leaf.IsCA {
		t.Errorf("leaf: SANs %v %v %v, EKU %v, CA %v", leaf.DNSNames, leaf.URIs, leaf.IPAddresses, leaf.ExtKeyUsage, leaf.IsCA)
	}
	if d := leaf.NotAfter.Sub(now); d != time.Hour {
		t.Errorf("lifetime %v, want 1h", d)
	}
	// Never past the CA.
	c, err = a.issueServing(testDNSName, 100*365*24*time.Hour, now)
	if err != nil || !c.Leaf.NotAfter.Equal(a.Certificate().NotAfter) {
		t.Errorf("long ttl: %v, %v; want the CA's expiry", err, c.Leaf.NotAfter)
	}
	if _, err := a.issueServing(testDNSName, time.Hour, a.Certificate().NotAfter.Add(time.Second)); err == nil {
		t.Error("issued from an expired CA")
	}
	if _, err := (&authority{CA: a.CA}).issueServing(testDNSName, time.Hour, now); err == nil {
		t.Error("issued without a key")
	}
}

// TestIssueServingIntermediate: a CA Secret whose signer is an
// intermediate serves the intermediate after the leaf.
func TestIssueServingIntermediate(t *testing.T) {
	rootKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	interKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	now := time.Now()
	ca := func(cn string, serial int64) *x509.Certificate {
		return &x509.Certificate{SerialNumber: bigInt(serial), Subject: pkix.Name{CommonName: cn}, NotBefore: now.Add(-time.Hour),
			NotAfter: now.Add(48 * time.Hour), IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	}
	rootDER, err := x509.CreateCertificate(rand.Reader, ca("root", 1), ca("root", 1), rootKey.Public(), rootKey)
	if err != nil {
		t.Fatal(err)
	}
	root, _ := x509.ParseCertificate(rootDER)
	interDER, err := x509.CreateCertificate(rand.Reader, ca("intermediate", 2), root, interKey.Public(), rootKey)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, _ := x509.MarshalPKCS8PrivateKey(interKey)
	certPEM := append(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: interDER}), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: rootDER})...)
	a, err := parseAuthority(certPEM, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}))
	if err != nil {
		t.Fatal(err)
	}
	c, err := a.issueServing(testDNSName, 72*time.Hour, now)
	if err != nil {
		t.Fatal(err)
	}
	verifyServing(t, a, c.Certificate, now)
	if len(c.Certificate) != 2 || string(c.Certificate[1]) != string(interDER) {
		t.Errorf("chain of %d, want leaf and intermediate", len(c.Certificate))
	}
	if !c.Leaf.NotAfter.Equal(now.Add(48 * time.Hour).Truncate(time.Second)) {
		t.Errorf("notAfter %v, want the intermediate's", c.Leaf.NotAfter)
	}
}

// TestNodeVerifierRefusesServing: the serving certificate has no node
// ID, so no daemon takes it for a node.
func TestNodeVerifierRefusesServing(t *testing.T) {
	a := testAuthority(t)
	c, err := a.issueServing(testDNSName, time.Hour, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	_, err = identity.NewMaterial(a.Bundle(), []*x509.Certificate{c.Leaf}, c.PrivateKey.(*ecdsa.PrivateKey))
	if !errors.Is(err, identity.ErrNotNode) {
		t.Errorf("node material from the serving certificate: %v, want ErrNotNode", err)
	}
}

func bigInt(n int64) *big.Int { return big.NewInt(n) }
