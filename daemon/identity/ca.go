package identity

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"os"
	"path/filepath"
	"time"
)

// DefaultCATTL is the lifetime of a CA made by NewCA and InitCA. Roots are
// long-lived and rotated by hand (two roots in the bundle during the
// change); node certificates are the short-lived ones.
const DefaultCATTL = 10 * 365 * 24 * time.Hour

// backdate is subtracted from NotBefore of everything issued, so that a
// peer whose clock is a little behind the issuer's does not refuse a
// certificate fresh from the CA as "not yet valid".
const backdate = time.Minute

// CAOptions tune NewCA and InitCA.
type CAOptions struct {
	// TTL is the CA certificate's lifetime; DefaultCATTL when zero.
	TTL time.Duration
	// Now is the clock; time.Now when nil.
	Now func() time.Time
}

// CA signs node certificates. Its certificate file may hold several
// certificates: the one matching the key signs; every self-signed one is
// a root of the trust bundle handed to nodes (so a CA directory whose
// ca.crt holds the new root and the old one issues bundles that trust
// both during a rotation); any other is an intermediate, sent after the
// leaf.
type CA struct {
	signer *x509.Certificate
	key    crypto.Signer
	roots  []*x509.Certificate
	chain  []*x509.Certificate // intermediates, signer first when it is one
}

// NewCA makes a CA in memory: an ECDSA P-256 key and a self-signed root.
func NewCA(opts CAOptions) (*CA, error) {
	now := clockOrNow(opts.Now)()
	ttl := opts.TTL
	if ttl == 0 {
		ttl = DefaultCATTL
	}
	if ttl < 0 {
		return nil, fmt.Errorf("new ca: negative ttl %s", ttl)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("new ca: %w", err)
	}
	serial, err := randomSerial()
	if err != nil {
		return nil, fmt.Errorf("new ca: %w", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		// The serial in the name tells two roots apart in a rotation
		// bundle, in openssl output and in x509 error messages.
		Subject:               pkix.Name{Organization: []string{"meshless"}, CommonName: fmt.Sprintf("meshless CA %x", serial.Bytes()[:4])},
		NotBefore:             now.Add(-backdate),
		NotAfter:              now.Add(ttl),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, fmt.Errorf("new ca: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("new ca: %w", err)
	}
	return &CA{signer: cert, key: key, roots: []*x509.Certificate{cert}}, nil
}

// InitCA makes a CA and writes it to dir: ca.crt (PEM, 0644) and ca.key
// (PKCS#8 PEM, 0600). dir is created 0700, or tightened to 0700 if it
// exists, since it holds the key of the whole mesh. It refuses to
// overwrite: if either file exists the error wraps fs.ErrExist and
// nothing is written.
func InitCA(dir string, opts CAOptions) (*CA, error) {
	if err := os.MkdirAll(dir, dirMode); err != nil {
		return nil, fmt.Errorf("init ca: %w", err)
	}
	if err := os.Chmod(dir, dirMode); err != nil {
		return nil, fmt.Errorf("init ca: %w", err)
	}
	certPath, keyPath := filepath.Join(dir, CACertFile), filepath.Join(dir, CAKeyFile)
	for _, p := range []string{certPath, keyPath} {
		if _, err := os.Lstat(p); err == nil {
			return nil, fmt.Errorf("init ca: %s: %w (refusing to overwrite a CA)", p, fs.ErrExist)
		}
	}
	ca, err := NewCA(opts)
	if err != nil {
		return nil, fmt.Errorf("init ca: %w", err)
	}
	keyPEM, err := encodePrivateKey(ca.key)
	if err != nil {
		return nil, fmt.Errorf("init ca: %w", err)
	}
	// The key first, exclusively: of two racing InitCAs one fails here and
	// leaves the other's key alone.
	if err := writeFileExclusive(keyPath, keyPEM, keyMode); err != nil {
		return nil, fmt.Errorf("init ca: %w", err)
	}
	if err := writeFileExclusive(certPath, encodeCertificates(ca.signer), certMode); err != nil {
		os.Remove(keyPath)
		return nil, fmt.Errorf("init ca: %w", err)
	}
	return ca, nil
}

// LoadCA reads ca.crt and ca.key from dir.
func LoadCA(dir string) (*CA, error) {
	certPEM, err := readPEMFile(filepath.Join(dir, CACertFile))
	if err != nil {
		return nil, fmt.Errorf("load ca: %w", err)
	}
	keyPEM, err := readPEMFile(filepath.Join(dir, CAKeyFile))
	if err != nil {
		return nil, fmt.Errorf("load ca: %w", err)
	}
	ca, err := ParseCA(certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("load ca from %s: %w", dir, err)
	}
	return ca, nil
}

// ParseCA builds a CA from PEM certificates and key (see CA for the roles
// of the certificates). The signing certificate must be a CA allowed to
// sign certificates, and there must be at least one root.
func ParseCA(certPEM, keyPEM []byte) (*CA, error) {
	certs, err := ParseCertificates(certPEM)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", CACertFile, err)
	}
	key, err := ParsePrivateKey(keyPEM)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", CAKeyFile, err)
	}
	ca := &CA{key: key}
	pub := key.Public().(interface{ Equal(crypto.PublicKey) bool })
	var others []*x509.Certificate
	for _, c := range certs {
		switch {
		case ca.signer == nil && pub.Equal(c.PublicKey):
			ca.signer = c
		case isSelfSigned(c):
			ca.roots = append(ca.roots, c)
		default:
			others = append(others, c)
		}
	}
	if ca.signer == nil {
		return nil, fmt.Errorf("no certificate in %s matches %s", CACertFile, CAKeyFile)
	}
	if !ca.signer.IsCA || ca.signer.KeyUsage&x509.KeyUsageCertSign == 0 {
		return nil, errors.New("the certificate matching the key is not a CA allowed to sign certificates")
	}
	if isSelfSigned(ca.signer) {
		// The signer first: the bundle's order is the preference order
		// of openssl and friends.
		ca.roots = append([]*x509.Certificate{ca.signer}, ca.roots...)
	} else {
		ca.chain = append([]*x509.Certificate{ca.signer}, others...)
	}
	if len(ca.roots) == 0 {
		return nil, fmt.Errorf("no self-signed root in %s", CACertFile)
	}
	return ca, nil
}

// Certificate is the CA's signing certificate.
func (ca *CA) Certificate() *x509.Certificate { return ca.signer }

// Bundle is the trust bundle the CA hands to nodes: every root.
func (ca *CA) Bundle() []*x509.Certificate {
	return append([]*x509.Certificate(nil), ca.roots...)
}

// isSelfSigned reports whether c is signed by its own key under its own
// name: a root.
func isSelfSigned(c *x509.Certificate) bool {
	return c.IsCA && c.CheckSignatureFrom(c) == nil && string(c.RawSubject) == string(c.RawIssuer)
}

// randomSerial is a positive 128-bit serial number, random as the CA/B
// forum asks so that serials cannot be predicted.
func randomSerial() (*big.Int, error) {
	limit := new(big.Int).Lsh(big.NewInt(1), 128)
	for {
		n, err := rand.Int(rand.Reader, limit)
		if err != nil {
			return nil, fmt.Errorf("serial: %w", err)
		}
		// A serial with a zero high byte would make the CA's name
		// prefix shorter; it is as random with one more draw.
		if n.Sign() > 0 && len(n.Bytes()) == 16 {
			return n, nil
		}
	}
}

// clockOrNow is now, or time.Now when nil.
func clockOrNow(now func() time.Time) func() time.Time {
	if now == nil {
		return time.Now
	}
	return now
}
