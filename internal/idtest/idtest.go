// Package idtest gives tests a real CA and real node identities (package
// identity), so that tunnels in tests speak the same mutual TLS as in
// production.
//
//	ca := idtest.NewCA(t)
//	src := ca.Source(t, "n1")   // n1's rotating source, material set
//	ca.Issue(t, "n2", dir)      // n2's ca.crt, tls.crt, tls.key in dir
package idtest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"testing"

	"github.com/meshless/meshless/daemon/identity"
)

// CA is a test certificate authority of the default trust domain.
type CA struct {
	*identity.CA
}

// NewCA makes a CA in memory.
func NewCA(t testing.TB) *CA {
	t.Helper()
	ca, err := identity.NewCA(identity.CAOptions{})
	if err != nil {
		t.Fatalf("test CA: %v", err)
	}
	return &CA{ca}
}

// Source returns a Source holding fresh material of node.
func (ca *CA) Source(t testing.TB, node string) *identity.Source {
	t.Helper()
	m, err := ca.NewNodeMaterial(node, identity.IssueOptions{})
	if err != nil {
		t.Fatalf("material for %s: %v", node, err)
	}
	src, err := identity.NewSource(identity.Options{Node: node})
	if err != nil {
		t.Fatal(err)
	}
	if err := src.Set(m); err != nil {
		t.Fatalf("set material of %s: %v", node, err)
	}
	return src
}

// Issue writes node's material (ca.crt, tls.crt, tls.key) into dir, as
// `meshlessctl ca issue` does.
func (ca *CA) Issue(t testing.TB, node, dir string) {
	t.Helper()
	m, err := ca.NewNodeMaterial(node, identity.IssueOptions{})
	if err != nil {
		t.Fatalf("material for %s: %v", node, err)
	}
	if err := identity.WriteMaterial(dir, m); err != nil {
		t.Fatalf("write material of %s: %v", node, err)
	}
}

// TLSCertificate returns a node certificate of node with its key, for a
// hand-made tls.Config (a client that does not judge the server, say).
func (ca *CA) TLSCertificate(t testing.TB, node string) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	chain, err := ca.SignNode(key.Public(), node, identity.IssueOptions{})
	if err != nil {
		t.Fatalf("certificate for %s: %v", node, err)
	}
	c := tls.Certificate{PrivateKey: key, Leaf: chain[0]}
	for _, x := range chain {
		c.Certificate = append(c.Certificate, x.Raw)
	}
	return c
}
