package k8s

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/meshless/meshless/daemon/identity"
	"github.com/meshless/meshless/install/signer"
)

// testRotation rotates the CA in the documented three steps while two
// daemons run, and checks after each that the nodes still authenticate
// each other: (1) add the new root to ca.crt, the old key still signing:
// every daemon's bundle gets both roots; (2) sign with the new key: a
// renewed node (new CA) and an old one (old CA) still handshake; (3)
// drop the old root: the old node's certificate no longer fits its
// bundle, and its client renews at once, by itself.
func testRotation(ctx context.Context, t *testing.T, e *signerEnv) {
	n1, n2 := e.startDaemon(ctx, t, "n1"), e.startDaemon(ctx, t, "n2")
	n1.waitReady(t)
	n2.waitReady(t)
	oldCert, oldKey := e.readCAFile(t, e.caDir, "ca.crt"), e.readCAFile(t, e.caDir, "ca.key")
	newDir := filepath.Join(t.TempDir(), "new-ca")
	newCA, err := identity.InitCA(newDir, identity.CAOptions{})
	if err != nil {
		t.Fatal(err)
	}
	newCert, newKey := e.readCAFile(t, newDir, "ca.crt"), e.readCAFile(t, newDir, "ca.key")
	issuedBy := func(d *daemonNode, ca *identity.CA) error {
		if err := d.src.Material().Leaf().CheckSignatureFrom(ca.Certificate()); err != nil {
			return fmt.Errorf("%s: leaf not issued by %s", d.name, ca.Certificate().Subject.CommonName)
		}
		return nil
	}
	roots := func(want int) func() error {
		return func() error {
			for _, d := range []*daemonNode{n1, n2} {
				if got := len(d.src.Material().Bundle()); got != want {
					return fmt.Errorf("%s: %d roots in the bundle, want %d", d.name, got, want)
				}
			}
			return nil
		}
	}
	both := func(step string) {
		t.Helper()
		if err := handshake(n2.src, n1.src, "n2", "n1"); err != nil {
			t.Fatalf("%s: n1 -> n2: %v", step, err)
		}
		if err := handshake(n1.src, n2.src, "n1", "n2"); err != nil {
			t.Fatalf("%s: n2 -> n1: %v", step, err)
		}
	}

	// 1. Both roots; the old key signs on.
	e.updateCASecret(ctx, t, append(append([]byte{}, oldCert...), newCert...), oldKey)
	waitFor(t, "both roots in every daemon's bundle", roots(2))
	both("both roots")

	// 2. The new key signs; n1 renews (a request as Run makes at half
	// life), n2 keeps its old-CA certificate.
	e.updateCASecret(ctx, t, append(append([]byte{}, newCert...), oldCert...), newKey)
	waitFor(t, "n1 renewed by the new CA", func() error {
		m, err := n1.client.Request(ctx)
		if err != nil {
			return err
		}
		if err := n1.src.Set(m); err != nil {
			return err
		}
		return issuedBy(n1, newCA)
	})
	if err := issuedBy(n2, e.ca); err != nil {
		t.Fatal(err)
	}
	both("new CA and old CA certificates")

	// 3. Only the new root. n2's certificate does not lead to it: its
	// client renews without waiting for half life.
	e.updateCASecret(ctx, t, newCert, newKey)
	waitFor(t, "one root in every daemon's bundle", roots(1))
	waitFor(t, "n2 renewed by the new CA", func() error { return issuedBy(n2, newCA) })
	both("new root only")
	e.ca, e.caDir = newCA, newDir
}

func (e *signerEnv) readCAFile(t *testing.T, dir, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// updateCASecret replaces the CA Secret's data, as
// `kubectl create secret generic ... --dry-run=client -o yaml | kubectl replace -f -` does.
func (e *signerEnv) updateCASecret(ctx context.Context, t *testing.T, certPEM, keyPEM []byte) {
	t.Helper()
	secrets := e.c.Client.CoreV1().Secrets(signerNS)
	s, err := secrets.Get(ctx, signer.DefaultCASecret, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	s.Data = map[string][]byte{"ca.crt": certPEM, "ca.key": keyPEM}
	if _, err := secrets.Update(ctx, s, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
}
