package signer

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"time"

	"github.com/meshless/meshless/daemon/identity"
)

// authority is a CA loaded from the Secret: the identity.CA that signs
// node certificates, and its key and certificates once more for the
// webhook's serving certificate. identity.CA does not make that one on
// purpose: it signs node identities only, a URI SAN and nothing else,
// and the daemons' verifier relies on it.
type authority struct {
	*identity.CA
	key   crypto.Signer       // nil in tests that only sign CSRs
	certs []*x509.Certificate // all of ca.crt: roots and intermediates
}

// parseAuthority builds the authority of a Secret's ca.crt and ca.key
// (identity.ParseCA checks them).
func parseAuthority(certPEM, keyPEM []byte) (*authority, error) {
	ca, err := identity.ParseCA(certPEM, keyPEM)
	if err != nil {
		return nil, err
	}
	key, err := identity.ParsePrivateKey(keyPEM)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", identity.CAKeyFile, err)
	}
	certs, err := identity.ParseCertificates(certPEM)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", identity.CACertFile, err)
	}
	return &authority{CA: ca, key: key, certs: certs}, nil
}

// servingBackdate is taken off NotBefore, as identity does, for an API
// server whose clock is a little behind the signer's.
const servingBackdate = time.Minute

// issueServing makes a fresh ECDSA P-256 key and a TLS server
// certificate for it: dnsName as the only SAN (and common name), key
// usage digital signature, extended key usage server auth only, valid
// ttl from now but never past the CA's own certificates. No URI SAN: no
// daemon takes it for a node. The result holds the leaf and the
// intermediates up to a root of the bundle, verified as the API server
// verifies a webhook (that host name, server auth, the bundle's roots).
func (a *authority) issueServing(dnsName string, ttl time.Duration, now time.Time) (*tls.Certificate, error) {
	if a.key == nil {
		return nil, errors.New("serving certificate: no CA key")
	}
	notAfter := now.Add(ttl)
	roots, inter := x509.NewCertPool(), x509.NewCertPool()
	for _, c := range a.certs {
		if isRoot(c) {
			roots.AddCert(c)
			continue
		}
		inter.AddCert(c)
		if c.NotAfter.Before(notAfter) {
			notAfter = c.NotAfter
		}
	}
	if s := a.Certificate(); s.NotAfter.Before(notAfter) {
		notAfter = s.NotAfter
	}
	if !notAfter.After(now) {
		return nil, fmt.Errorf("serving certificate: the CA expired at %s", notAfter.UTC().Format(time.RFC3339))
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("serving certificate: %w", err)
	}
	tmpl := &x509.Certificate{
		// SerialNumber nil: crypto/x509 draws a random one.
		Subject:               pkix.Name{Organization: []string{"meshless"}, CommonName: dnsName},
		DNSNames:              []string{dnsName},
		NotBefore:             now.Add(-servingBackdate),
		NotAfter:              notAfter,
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, a.Certificate(), key.Public(), a.key)
	if err != nil {
		return nil, fmt.Errorf("serving certificate: %w", err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("serving certificate: %w", err)
	}
	chains, err := leaf.Verify(x509.VerifyOptions{
		DNSName: dnsName, Roots: roots, Intermediates: inter, CurrentTime: now,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	})
	if err != nil {
		return nil, fmt.Errorf("serving certificate does not verify: %w", err)
	}
	out := &tls.Certificate{PrivateKey: key, Leaf: leaf}
	for _, c := range chains[0][:len(chains[0])-1] { // the root stays out
		out.Certificate = append(out.Certificate, c.Raw)
	}
	return out, nil
}

// isRoot reports whether c is self-signed: a root of the bundle.
func isRoot(c *x509.Certificate) bool {
	return c.IsCA && bytes.Equal(c.RawSubject, c.RawIssuer) && c.CheckSignatureFrom(c) == nil
}
