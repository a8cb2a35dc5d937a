package identity

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"net/url"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// DefaultNodeTTL is the lifetime of a node certificate: short, so that a
// stolen key is worth little, and renewed at half of it.
const DefaultNodeTTL = 24 * time.Hour

// IssueOptions tune the issuance of node certificates.
type IssueOptions struct {
	// TrustDomain of the node IDs; DefaultTrustDomain when zero.
	TrustDomain spiffeid.TrustDomain
	// TTL of the certificate; DefaultNodeTTL when zero. The certificate
	// never outlives the CA's certificate.
	TTL time.Duration
	// Now is the clock; time.Now when nil.
	Now func() time.Time
}

// trustDomain is opts.TrustDomain or the default.
func (o IssueOptions) trustDomain() spiffeid.TrustDomain {
	if o.TrustDomain.IsZero() {
		return spiffeid.RequireTrustDomainFromString(DefaultTrustDomain)
	}
	return o.TrustDomain
}

// SignNode issues a certificate for node's public key pub: the node ID as
// the only SAN, key usage digitalSignature, extended key usages serverAuth
// and clientAuth (each node daemon is both ends of tunnels). It returns
// the leaf followed by the CA's intermediates, if any. pub must be ECDSA
// P-256 or Ed25519 (ErrCSRKeyType otherwise): small, fast keys that every
// TLS 1.3 stack speaks.
func (ca *CA) SignNode(pub crypto.PublicKey, node string, opts IssueOptions) ([]*x509.Certificate, error) {
	if err := checkNodeKey(pub); err != nil {
		return nil, fmt.Errorf("sign node %q: %w", node, err)
	}
	td := opts.trustDomain()
	id, err := NodeID(td, node)
	if err != nil {
		return nil, fmt.Errorf("sign node: %w", err)
	}
	ttl := opts.TTL
	if ttl == 0 {
		ttl = DefaultNodeTTL
	}
	if ttl < 0 {
		return nil, fmt.Errorf("sign node %q: negative ttl %s", node, ttl)
	}
	now := clockOrNow(opts.Now)()
	if now.Before(ca.signer.NotBefore) {
		return nil, fmt.Errorf("sign node %q: the CA certificate is not valid before %s", node, ca.signer.NotBefore.UTC().Format(time.RFC3339))
	}
	notAfter := now.Add(ttl)
	for _, c := range append([]*x509.Certificate{ca.signer}, ca.chain...) {
		if c.NotAfter.Before(notAfter) {
			notAfter = c.NotAfter
		}
	}
	if !notAfter.After(now) {
		return nil, fmt.Errorf("sign node %q: the CA certificate expired at %s", node, notAfter.UTC().Format(time.RFC3339))
	}
	serial, err := randomSerial()
	if err != nil {
		return nil, fmt.Errorf("sign node %q: %w", node, err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		// The subject is for people reading the certificate; identity is
		// the URI SAN alone.
		Subject:               pkix.Name{Organization: []string{"meshless"}, CommonName: node},
		URIs:                  []*url.URL{id.URL()},
		NotBefore:             now.Add(-backdate),
		NotAfter:              notAfter,
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		BasicConstraintsValid: true,
	}
	leaf, err := ca.sign(tmpl, pub)
	if err != nil {
		return nil, fmt.Errorf("sign node %q: %w", node, err)
	}
	// Check what was made, with the verifier peers use: a CA whose files
	// do not chain (an intermediate without its root) fails here, at the
	// operator's command, rather than in every handshake.
	chain := append([]*x509.Certificate{leaf}, ca.chain...)
	if _, _, err := nodeOf(leaf, td); err != nil {
		return nil, fmt.Errorf("sign node %q: %w", node, err)
	}
	roots := x509.NewCertPool()
	for _, r := range ca.roots {
		roots.AddCert(r)
	}
	if err := verifyChain(chain, roots, now, x509.ExtKeyUsageClientAuth); err != nil {
		return nil, fmt.Errorf("sign node %q: issued certificate does not verify: %w", node, err)
	}
	return chain, nil
}

// sign signs tmpl for pub with the CA's key and parses the result.
func (ca *CA) sign(tmpl *x509.Certificate, pub crypto.PublicKey) (*x509.Certificate, error) {
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.signer, pub, ca.key)
	if err != nil {
		return nil, err
	}
	return x509.ParseCertificate(der)
}

// NewNodeMaterial makes a fresh ECDSA P-256 key for node, signs it and
// returns the node's material with the CA's bundle.
func (ca *CA) NewNodeMaterial(node string, opts IssueOptions) (*Material, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("new node material: %w", err)
	}
	chain, err := ca.SignNode(key.Public(), node, opts)
	if err != nil {
		return nil, err
	}
	return NewMaterial(ca.roots, chain, key)
}

// IssueNode loads the CA in caDir, issues material for node and writes it
// to outDir (see WriteMaterial): ca.crt holds every root of the CA
// directory's ca.crt, tls.crt the leaf and intermediates, tls.key the new
// key. An existing outDir is overwritten, which is how a standalone node
// is renewed; a running Source picks the new files up.
func IssueNode(caDir, node, outDir string, opts IssueOptions) (*Material, error) {
	ca, err := LoadCA(caDir)
	if err != nil {
		return nil, fmt.Errorf("issue: %w", err)
	}
	m, err := ca.NewNodeMaterial(node, opts)
	if err != nil {
		return nil, fmt.Errorf("issue: %w", err)
	}
	if err := WriteMaterial(outDir, m); err != nil {
		return nil, fmt.Errorf("issue: %w", err)
	}
	return m, nil
}

// checkNodeKey allows ECDSA P-256 and Ed25519 public keys only.
func checkNodeKey(pub crypto.PublicKey) error {
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		if k.Curve == elliptic.P256() {
			return nil
		}
		return fmt.Errorf("ECDSA on %s: %w", k.Curve.Params().Name, ErrCSRKeyType)
	case ed25519.PublicKey:
		return nil
	default:
		return fmt.Errorf("%T: %w", pub, ErrCSRKeyType)
	}
}

// SignNodeCSR issues a node certificate from a certificate request, after
// checking it as a signer must: the request is signed by its key
// (ErrCSRSignature), the key is ECDSA P-256 or Ed25519 (ErrCSRKeyType),
// it asks for no DNS, IP or email SAN and a single URI (ErrCSRExtraSAN),
// and that URI is NodeID(opts.TrustDomain, node) (ErrCSRWrongSAN).
//
// node is who the caller authenticated (a Kubernetes signer: the node of
// the pod-bound token), never something read from the request: the
// request only proposes a key and repeats the identity. The request's
// subject and extensions are ignored; the certificate is what SignNode
// makes.
func (ca *CA) SignNodeCSR(csr *x509.CertificateRequest, node string, opts IssueOptions) ([]*x509.Certificate, error) {
	if csr == nil {
		return nil, errors.New("sign csr: nil request")
	}
	want, err := NodeID(opts.trustDomain(), node)
	if err != nil {
		return nil, fmt.Errorf("sign csr: %w", err)
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, fmt.Errorf("sign csr for %q: %w: %w", node, ErrCSRSignature, err)
	}
	if err := checkNodeKey(csr.PublicKey); err != nil {
		return nil, fmt.Errorf("sign csr for %q: %w", node, err)
	}
	if n := len(csr.DNSNames) + len(csr.IPAddresses) + len(csr.EmailAddresses); n != 0 || len(csr.URIs) > 1 {
		return nil, fmt.Errorf("sign csr for %q: %d URI, %d DNS, %d IP, %d email SANs: %w", node,
			len(csr.URIs), len(csr.DNSNames), len(csr.IPAddresses), len(csr.EmailAddresses), ErrCSRExtraSAN)
	}
	if len(csr.URIs) == 0 {
		return nil, fmt.Errorf("sign csr for %q: no URI SAN: %w", node, ErrCSRWrongSAN)
	}
	if got := csr.URIs[0].String(); got != want.String() {
		return nil, fmt.Errorf("sign csr: asks for %q, caller is %q: %w", got, want, ErrCSRWrongSAN)
	}
	return ca.SignNode(csr.PublicKey, node, opts)
}

// NewNodeCSR makes the certificate request a node sends to a signer: key's
// public half, signed by key, with NodeID(td, node) as its only SAN. It
// returns the PEM "CERTIFICATE REQUEST" that the Kubernetes CSR API takes.
func NewNodeCSR(opts IssueOptions, node string, key crypto.Signer) ([]byte, error) {
	id, err := NodeID(opts.trustDomain(), node)
	if err != nil {
		return nil, fmt.Errorf("new csr: %w", err)
	}
	if err := checkNodeKey(key.Public()); err != nil {
		return nil, fmt.Errorf("new csr: %w", err)
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{
		Subject: pkix.Name{Organization: []string{"meshless"}, CommonName: node},
		URIs:    []*url.URL{id.URL()},
	}, key)
	if err != nil {
		return nil, fmt.Errorf("new csr: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}), nil
}

// ParseCSR decodes one PEM "CERTIFICATE REQUEST" (what NewNodeCSR makes
// and what a Kubernetes CertificateSigningRequest's spec.request holds).
// It does not check the signature: SignNodeCSR does.
func ParseCSR(data []byte) (*x509.CertificateRequest, error) {
	if len(data) > maxPEMFile {
		return nil, fmt.Errorf("csr: more than %d bytes", maxPEMFile)
	}
	b, _ := pem.Decode(data)
	if b == nil || b.Type != "CERTIFICATE REQUEST" {
		return nil, errors.New("csr: no PEM CERTIFICATE REQUEST block")
	}
	csr, err := x509.ParseCertificateRequest(b.Bytes)
	if err != nil {
		return nil, fmt.Errorf("csr: %w", err)
	}
	return csr, nil
}
