package identity

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
)

// File names in a CA directory (InitCA) and a node's TLS directory
// (IssueNode, the same names as a kubernetes.io/tls Secret plus ca.crt).
const (
	CACertFile  = "ca.crt"
	CAKeyFile   = "ca.key"
	TLSCertFile = "tls.crt"
	TLSKeyFile  = "tls.key"
)

// Modes of what this package writes: keys and their directories are the
// owner's alone; certificates are public.
const (
	dirMode  = 0o700
	keyMode  = 0o600
	certMode = 0o644
)

// maxPEMFile bounds what is read from a file or accepted from a caller:
// a bundle of a few roots is a few KiB, so anything much larger is a
// mistake (a wrong path) rather than material.
const maxPEMFile = 1 << 20

// ParseCertificates decodes every CERTIFICATE block of PEM data, in order.
// Text between blocks is ignored, as openssl does; other block types are
// refused rather than skipped, so that a key pasted into a bundle is
// noticed. It fails when there is no certificate.
func ParseCertificates(data []byte) ([]*x509.Certificate, error) {
	if len(data) > maxPEMFile {
		return nil, fmt.Errorf("pem: more than %d bytes", maxPEMFile)
	}
	var certs []*x509.Certificate
	rest := data
	for {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			break
		}
		if b.Type != "CERTIFICATE" {
			return nil, fmt.Errorf("pem: block %d is %q, want CERTIFICATE", len(certs)+1, b.Type)
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			return nil, fmt.Errorf("pem: certificate %d: %w", len(certs)+1, err)
		}
		certs = append(certs, c)
	}
	if len(certs) == 0 {
		return nil, errors.New("pem: no certificate")
	}
	return certs, nil
}

// ParsePrivateKey decodes one PEM private key: PKCS#8 ("PRIVATE KEY", what
// this package writes) or SEC 1 ("EC PRIVATE KEY", what openssl ecparam
// writes). Only ECDSA and Ed25519 keys are accepted.
func ParsePrivateKey(data []byte) (crypto.Signer, error) {
	if len(data) > maxPEMFile {
		return nil, fmt.Errorf("pem: more than %d bytes", maxPEMFile)
	}
	b, rest := pem.Decode(data)
	if b == nil {
		return nil, errors.New("pem: no private key")
	}
	if next, _ := pem.Decode(rest); next != nil {
		return nil, errors.New("pem: more than one block where one private key was expected")
	}
	var key any
	var err error
	switch b.Type {
	case "PRIVATE KEY":
		key, err = x509.ParsePKCS8PrivateKey(b.Bytes)
	case "EC PRIVATE KEY":
		key, err = x509.ParseECPrivateKey(b.Bytes)
	default:
		return nil, fmt.Errorf("pem: block is %q, want PRIVATE KEY", b.Type)
	}
	if err != nil {
		return nil, fmt.Errorf("pem: private key: %w", err)
	}
	switch k := key.(type) {
	case *ecdsa.PrivateKey:
		return k, nil
	case ed25519.PrivateKey:
		return k, nil
	default:
		return nil, fmt.Errorf("pem: private key of type %T, want ECDSA or Ed25519", key)
	}
}

// encodeCertificates is the PEM of certs, in order.
func encodeCertificates(certs ...*x509.Certificate) []byte {
	var buf bytes.Buffer
	for _, c := range certs {
		pem.Encode(&buf, &pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
	}
	return buf.Bytes()
}

// encodePrivateKey is the PKCS#8 PEM of key.
func encodePrivateKey(key crypto.Signer) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("marshal private key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

// readPEMFile reads a file of at most maxPEMFile bytes.
func readPEMFile(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxPEMFile+1))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	if len(data) > maxPEMFile {
		return nil, fmt.Errorf("%s: more than %d bytes", path, maxPEMFile)
	}
	return data, nil
}

// writeFileAtomic writes data to path through a temporary file in the same
// directory and a rename, so that a reader (the Source's poller, a daemon
// starting) sees the old file or the new one, never half of one. The mode
// is set on the temporary file before any byte is written, so a key is
// never readable by others, not even for a moment.
func writeFileAtomic(path string, data []byte, mode os.FileMode) error {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	tmp := f.Name()
	err = f.Chmod(mode)
	if err == nil {
		_, err = f.Write(data)
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

// writeFileExclusive creates path with mode and data, failing if it
// exists; a failed write leaves no file behind.
func writeFileExclusive(path string, data []byte, mode os.FileMode) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
	if err != nil {
		return fmt.Errorf("create %s: %w", path, err)
	}
	// O_CREATE's mode is filtered by the umask; a key must be exactly mode.
	err = f.Chmod(mode)
	if err == nil {
		_, err = f.Write(data)
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(path)
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}
