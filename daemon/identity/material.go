package identity

import (
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// Material is one node's TLS material: its certificate chain (leaf
// first), the leaf's private key, and the trust bundle (the roots a peer's
// chain must lead to; two of them during a CA rotation). It is immutable;
// a rotation replaces the whole Material, so a handshake never sees a new
// certificate with an old key or bundle.
type Material struct {
	cert   tls.Certificate // for crypto/tls; shares the DER of chain
	chain  []*x509.Certificate
	bundle []*x509.Certificate
	roots  *x509.CertPool
	id     spiffeid.ID
	node   string
}

// NewMaterial checks that key belongs to chain[0], that chain[0] has the
// shape of a node certificate (one URI SAN holding a node ID, not a CA,
// usable for TLS server and client auth) and that bundle is not empty. It
// does not check the time or the signatures: Source.Set does, with the
// source's clock and trust domain.
func NewMaterial(bundle, chain []*x509.Certificate, key crypto.Signer) (*Material, error) {
	if len(bundle) == 0 {
		return nil, errors.New("material: empty trust bundle")
	}
	if len(chain) == 0 {
		return nil, errors.New("material: no certificate")
	}
	if key == nil {
		return nil, errors.New("material: no private key")
	}
	leaf := chain[0]
	pub, ok := key.Public().(interface{ Equal(crypto.PublicKey) bool })
	if !ok || !pub.Equal(leaf.PublicKey) {
		return nil, fmt.Errorf("material: %w", ErrKeyMismatch)
	}
	id, err := leafID(leaf)
	if err != nil {
		return nil, fmt.Errorf("material: %w", err)
	}
	_, node, err := nodeOf(leaf, id.TrustDomain())
	if err != nil {
		return nil, fmt.Errorf("material: %w", err)
	}
	if !hasUsages(leaf, x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth) {
		return nil, fmt.Errorf("material: %s: extended key usage lacks serverAuth or clientAuth: %w", id, ErrNotNode)
	}
	m := &Material{
		bundle: append([]*x509.Certificate(nil), bundle...),
		chain:  append([]*x509.Certificate(nil), chain...),
		roots:  x509.NewCertPool(),
		id:     id,
		node:   node,
	}
	for _, c := range bundle {
		m.roots.AddCert(c)
	}
	m.cert = tls.Certificate{PrivateKey: key, Leaf: leaf}
	for _, c := range chain {
		m.cert.Certificate = append(m.cert.Certificate, c.Raw)
	}
	return m, nil
}

// leafID is the SPIFFE ID of a certificate with exactly one URI SAN.
func leafID(leaf *x509.Certificate) (spiffeid.ID, error) {
	if len(leaf.URIs) != 1 {
		return spiffeid.ID{}, fmt.Errorf("want exactly one URI SAN, have %d: %w", len(leaf.URIs), ErrNotNode)
	}
	id, err := ParseID(leaf.URIs[0].String())
	if err != nil {
		return spiffeid.ID{}, fmt.Errorf("%w: %w", ErrNotNode, err)
	}
	return id, nil
}

// ParseMaterial is NewMaterial on PEM: the bundle (ca.crt), the chain
// (tls.crt, leaf first) and the key (tls.key).
func ParseMaterial(bundlePEM, chainPEM, keyPEM []byte) (*Material, error) {
	bundle, err := ParseCertificates(bundlePEM)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", CACertFile, err)
	}
	chain, err := ParseCertificates(chainPEM)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", TLSCertFile, err)
	}
	key, err := ParsePrivateKey(keyPEM)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", TLSKeyFile, err)
	}
	return NewMaterial(bundle, chain, key)
}

// LoadMaterial reads ca.crt, tls.crt and tls.key from dir.
func LoadMaterial(dir string) (*Material, error) {
	var data [3][]byte
	for i, name := range []string{CACertFile, TLSCertFile, TLSKeyFile} {
		b, err := readPEMFile(filepath.Join(dir, name))
		if err != nil {
			return nil, fmt.Errorf("load tls material: %w", err)
		}
		data[i] = b
	}
	m, err := ParseMaterial(data[0], data[1], data[2])
	if err != nil {
		return nil, fmt.Errorf("load tls material from %s: %w", dir, err)
	}
	return m, nil
}

// WriteMaterial writes m to dir as ca.crt, tls.crt (0644) and tls.key
// (0600), creating dir (0700) if needed. Each file is replaced atomically;
// the key goes last so that a reader polling the directory sees a new
// certificate with its old key (refused, retried) rather than a new key
// that the old certificate would advertise.
func WriteMaterial(dir string, m *Material) error {
	if err := os.MkdirAll(dir, dirMode); err != nil {
		return fmt.Errorf("write tls material: %w", err)
	}
	keyPEM, err := encodePrivateKey(m.cert.PrivateKey.(crypto.Signer))
	if err != nil {
		return fmt.Errorf("write tls material: %w", err)
	}
	files := []struct {
		name string
		data []byte
		mode os.FileMode
	}{
		{CACertFile, encodeCertificates(m.bundle...), certMode},
		{TLSCertFile, encodeCertificates(m.Chain()...), certMode},
		{TLSKeyFile, keyPEM, keyMode},
	}
	for _, f := range files {
		if err := writeFileAtomic(filepath.Join(dir, f.name), f.data, f.mode); err != nil {
			return fmt.Errorf("write tls material: %w", err)
		}
	}
	return nil
}

// ID is the node's SPIFFE ID, spiffe://<td>/meshless/node/<node>.
func (m *Material) ID() spiffeid.ID { return m.id }

// Node is the node name in the certificate.
func (m *Material) Node() string { return m.node }

// Leaf is the node's certificate.
func (m *Material) Leaf() *x509.Certificate { return m.cert.Leaf }

// Chain is the leaf followed by the intermediates sent with it.
func (m *Material) Chain() []*x509.Certificate {
	return append([]*x509.Certificate(nil), m.chain...)
}

// Bundle is the trust bundle: the roots a peer's chain must lead to.
func (m *Material) Bundle() []*x509.Certificate {
	return append([]*x509.Certificate(nil), m.bundle...)
}

// NotBefore is the start of the leaf's validity.
func (m *Material) NotBefore() time.Time { return m.cert.Leaf.NotBefore }

// NotAfter is the leaf's expiry.
func (m *Material) NotAfter() time.Time { return m.cert.Leaf.NotAfter }

// RenewAt is half-way through the leaf's validity: the time to ask for a
// new certificate, leaving the other half to retry in.
func (m *Material) RenewAt() time.Time {
	nb, na := m.NotBefore(), m.NotAfter()
	return nb.Add(na.Sub(nb) / 2)
}

// validate checks m for use by a node of td named node ("" for any) at
// now: the trust domain, the node, the validity period of the whole chain
// and that the chain leads to a root of m's own bundle, so that peers
// holding the same bundle accept it.
func (m *Material) validate(td spiffeid.TrustDomain, node string, now time.Time) error {
	if !m.id.MemberOf(td) {
		return fmt.Errorf("%s: trust domain %s, want %s: %w", m.id, m.id.TrustDomain(), td, ErrTrustDomain)
	}
	if node != "" && m.node != node {
		return fmt.Errorf("certificate is for node %q, this is node %q: %w", m.node, node, ErrWrongPeer)
	}
	chain := m.chain
	if err := checkTimes(chain, now); err != nil {
		return fmt.Errorf("%s: %w", m.id, err)
	}
	for _, usage := range []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth} {
		if err := verifyChain(chain, m.roots, now, usage); err != nil {
			return fmt.Errorf("%s against its own bundle: %w", m.id, err)
		}
	}
	return nil
}
