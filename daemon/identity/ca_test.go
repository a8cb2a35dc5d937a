package identity

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// checkMode fails unless path has exactly the permission bits want.
func checkMode(t *testing.T, path string, want os.FileMode) {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if got := fi.Mode().Perm(); got != want {
		t.Errorf("%s: mode %o, want %o", filepath.Base(path), got, want)
	}
}

func TestInitCA(t *testing.T) {
	// A lax umask must not loosen what InitCA writes.
	old := umask(0)
	defer umask(old)
	for _, pre := range []string{"new dir", "existing 0755 dir"} {
		t.Run(pre, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "ca")
			if pre != "new dir" {
				if err := os.Mkdir(dir, 0o755); err != nil {
					t.Fatal(err)
				}
			}
			ca, err := InitCA(dir, CAOptions{})
			if err != nil {
				t.Fatal(err)
			}
			checkMode(t, dir, 0o700)
			checkMode(t, filepath.Join(dir, CAKeyFile), 0o600)
			checkMode(t, filepath.Join(dir, CACertFile), 0o644)
			c := ca.Certificate()
			if !c.IsCA || !isSelfSigned(c) || c.KeyUsage&x509.KeyUsageCertSign == 0 {
				t.Errorf("not a self-signed signing CA: %+v", c)
			}
			if pub, ok := c.PublicKey.(*ecdsa.PublicKey); !ok || pub.Curve != elliptic.P256() {
				t.Errorf("CA key %T, want ECDSA P-256", c.PublicKey)
			}
			loaded, err := LoadCA(dir)
			if err != nil || !loaded.Certificate().Equal(c) {
				t.Fatalf("LoadCA: %v", err)
			}
		})
	}
}

func TestInitCARefusesToOverwrite(t *testing.T) {
	for _, existing := range [][]string{{CACertFile, CAKeyFile}, {CACertFile}, {CAKeyFile}} {
		t.Run(strings.Join(existing, "+"), func(t *testing.T) {
			dir := t.TempDir()
			for _, f := range existing {
				if err := os.WriteFile(filepath.Join(dir, f), []byte("keep me"), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			if _, err := InitCA(dir, CAOptions{}); !errors.Is(err, fs.ErrExist) {
				t.Fatalf("InitCA over %v: %v, want ErrExist", existing, err)
			}
			for _, f := range []string{CACertFile, CAKeyFile} {
				data, err := os.ReadFile(filepath.Join(dir, f))
				if slices.Contains(existing, f) && string(data) != "keep me" {
					t.Errorf("%s was overwritten", f)
				}
				if !slices.Contains(existing, f) && !errors.Is(err, fs.ErrNotExist) {
					t.Errorf("%s was written by a refused InitCA", f)
				}
			}
		})
	}
}

func TestIssueNode(t *testing.T) {
	old := umask(0)
	defer umask(old)
	clk := newClock()
	caDir := t.TempDir()
	if _, err := InitCA(caDir, CAOptions{Now: clk.Now}); err != nil {
		t.Fatal(err)
	}
	prod := spiffeid.RequireTrustDomainFromString("prod.example")
	tests := []struct {
		name     string
		opts     IssueOptions
		wantID   string
		wantLife time.Duration
	}{
		{"defaults", IssueOptions{}, "spiffe://cluster.local/meshless/node/n1", DefaultNodeTTL},
		{"ttl and trust domain", IssueOptions{TTL: time.Hour, TrustDomain: prod}, "spiffe://prod.example/meshless/node/n1", time.Hour},
		{"clamped to the CA", IssueOptions{TTL: 20 * 365 * 24 * time.Hour}, "spiffe://cluster.local/meshless/node/n1", DefaultCATTL},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out := filepath.Join(t.TempDir(), "tls")
			tt.opts.Now = clk.Now
			if _, err := IssueNode(caDir, "n1", out, tt.opts); err != nil {
				t.Fatal(err)
			}
			checkMode(t, out, 0o700)
			checkMode(t, filepath.Join(out, TLSKeyFile), 0o600)
			checkMode(t, filepath.Join(out, TLSCertFile), 0o644)
			checkMode(t, filepath.Join(out, CACertFile), 0o644)
			m, err := LoadMaterial(out)
			if err != nil {
				t.Fatal(err)
			}
			leaf := m.Leaf()
			if len(leaf.URIs) != 1 || leaf.URIs[0].String() != tt.wantID {
				t.Errorf("URI SANs %v, want only %s", leaf.URIs, tt.wantID)
			}
			if len(leaf.DNSNames)+len(leaf.IPAddresses)+len(leaf.EmailAddresses) != 0 {
				t.Errorf("extra SANs: %v %v %v", leaf.DNSNames, leaf.IPAddresses, leaf.EmailAddresses)
			}
			if leaf.IsCA || leaf.KeyUsage != x509.KeyUsageDigitalSignature {
				t.Errorf("IsCA %v, KeyUsage %b; want a leaf for digitalSignature only", leaf.IsCA, leaf.KeyUsage)
			}
			if !slices.Equal(leaf.ExtKeyUsage, []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}) {
				t.Errorf("ExtKeyUsage %v, want serverAuth+clientAuth", leaf.ExtKeyUsage)
			}
			if pub, ok := leaf.PublicKey.(*ecdsa.PublicKey); !ok || pub.Curve != elliptic.P256() {
				t.Errorf("key %T, want ECDSA P-256", leaf.PublicKey)
			}
			life := leaf.NotAfter.Sub(clk.Now())
			if d := life - tt.wantLife; d > time.Second || d < -time.Second {
				t.Errorf("lifetime from now %s, want %s", life, tt.wantLife)
			}
			if leaf.NotBefore.After(clk.Now().Add(-backdate + time.Second)) {
				t.Errorf("NotBefore %s not backdated", leaf.NotBefore)
			}
		})
	}
}

// TestIssueNodeRefuses: names that are not a path segment, a CA that
// is not valid yet, and keys of the wrong kind.
func TestIssueNodeRefuses(t *testing.T) {
	clk := newClock()
	ca := mustCA(t, clk)
	for _, node := range []string{"", ".", "..", "a/b", "n 1", "n1?x"} {
		if _, err := ca.NewNodeMaterial(node, IssueOptions{Now: clk.Now}); err == nil {
			t.Errorf("issued for node %q", node)
		}
	}
	early := func() time.Time { return clk.Now().Add(-365 * 24 * time.Hour) }
	if _, err := ca.NewNodeMaterial("n1", IssueOptions{Now: early}); err == nil {
		t.Error("issued before the CA's validity")
	}
	p384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if _, err := ca.SignNode(p384.Public(), "n1", IssueOptions{Now: clk.Now}); !errors.Is(err, ErrCSRKeyType) {
		t.Errorf("SignNode with P-384: %v, want ErrCSRKeyType", err)
	}
}

// TestParseCA covers CA files of several certificates: the signer is the
// one matching the key; roots form the bundle; an intermediate signer is
// sent in tls.crt after the leaf.
func TestParseCA(t *testing.T) {
	clk := newClock()
	root, other := mustCA(t, clk), mustCA(t, clk)
	interKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	serial, _ := randomSerial()
	inter, err := root.sign(&x509.Certificate{
		SerialNumber: serial, Subject: pkix.Name{CommonName: "meshless intermediate"},
		NotBefore: clk.Now().Add(-time.Hour), NotAfter: clk.Now().Add(365 * 24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}, interKey.Public())
	if err != nil {
		t.Fatal(err)
	}
	keyPEM := func(k crypto.Signer) []byte {
		b, err := encodePrivateKey(k)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	rootKey, otherKey := keyPEM(root.key), keyPEM(other.key)
	t.Run("rotation: new root first, old root after", func(t *testing.T) {
		ca, err := ParseCA(encodeCertificates(other.signer, root.signer), otherKey)
		if err != nil {
			t.Fatal(err)
		}
		if !ca.Certificate().Equal(other.signer) || len(ca.Bundle()) != 2 || len(ca.chain) != 0 {
			t.Fatalf("signer %s, %d roots, %d intermediates", ca.Certificate().Subject, len(ca.Bundle()), len(ca.chain))
		}
	})
	t.Run("old root first still signs with the key's certificate", func(t *testing.T) {
		ca, err := ParseCA(encodeCertificates(root.signer, other.signer), otherKey)
		if err != nil || !ca.Certificate().Equal(other.signer) || !ca.Bundle()[0].Equal(other.signer) {
			t.Fatalf("ParseCA: %v", err)
		}
	})
	t.Run("intermediate", func(t *testing.T) {
		ca, err := ParseCA(encodeCertificates(inter, root.signer), keyPEM(interKey))
		if err != nil {
			t.Fatal(err)
		}
		w := newWorld(t)
		m, err := ca.NewNodeMaterial("n1", IssueOptions{Now: w.clk.Now})
		if err != nil {
			t.Fatal(err)
		}
		if len(m.Chain()) != 2 || !m.Chain()[1].Equal(inter) || len(m.Bundle()) != 1 || !m.Bundle()[0].Equal(root.signer) {
			t.Fatalf("chain %d, bundle %d; want leaf+intermediate and the root", len(m.Chain()), len(m.Bundle()))
		}
		// A peer trusting the root accepts the node through the intermediate.
		peer := newTestSource(t, root, "n2", w.clk)
		srv := newTestSource(t, root, "n1", w.clk)
		if err := srv.Set(m); err != nil {
			t.Fatal(err)
		}
		mustHandshake(t, srv.ServerConfig(), peer.ClientConfig("n1"))
	})
	refusals := []struct {
		name      string
		cert, key []byte
	}{
		{"key matches no certificate", encodeCertificates(root.signer), otherKey},
		{"no root", encodeCertificates(inter), keyPEM(interKey)},
		{"garbage", []byte("not pem"), rootKey},
		{"key in the certificate file", append(encodeCertificates(root.signer), rootKey...), rootKey},
	}
	for _, tt := range refusals {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := ParseCA(tt.cert, tt.key); err == nil {
				t.Fatal("accepted")
			}
		})
	}
	if !bytes.Contains(encodeCertificates(root.signer), []byte("BEGIN CERTIFICATE")) {
		t.Fatal("encodeCertificates wrote no PEM")
	}
}

// umask sets the process's umask and returns the old one. The tests that
// use it are not parallel.
func umask(m int) int { return syscall.Umask(m) }
