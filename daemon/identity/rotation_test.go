package identity

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// caDir writes a CA directory whose ca.crt holds the signer of ca followed
// by the extra roots, and ca.key the signer's key: the layout of a CA
// directory during a root rotation.
func caDir(t *testing.T, ca *CA, extraRoots ...*CA) string {
	t.Helper()
	dir := t.TempDir()
	certs := encodeCertificates(ca.signer)
	for _, r := range extraRoots {
		certs = append(certs, encodeCertificates(r.signer)...)
	}
	keyPEM, err := encodePrivateKey(ca.key)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, CACertFile), certs, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, CAKeyFile), keyPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	return dir
}

// issuedSource is a Source for node loaded from what IssueNode wrote with
// the CA directory caDir.
func issuedSource(t *testing.T, caDir, node string, clk *fakeClock) *Source {
	t.Helper()
	out := filepath.Join(t.TempDir(), node)
	if _, err := IssueNode(caDir, node, out, IssueOptions{Now: clk.Now}); err != nil {
		t.Fatal(err)
	}
	s, err := NewSource(Options{Node: node, Dir: out, Now: clk.Now, Logger: discardLogger()})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// TestCARotation walks a root rotation: while bundles hold the old and
// the new root, nodes with leaves of either CA accept each other; a node
// that never got the new root refuses a new leaf; once the old root is
// dropped, old leaves are refused.
func TestCARotation(t *testing.T) {
	clk := newClock()
	oldCA, newCA := mustCA(t, clk), mustCA(t, clk)
	rotNew := caDir(t, newCA, oldCA) // signs with the new key, bundles both
	rotOld := caDir(t, oldCA, newCA) // signs with the old key, bundles both
	onlyOld := caDir(t, oldCA)
	onlyNew := caDir(t, newCA)

	n1 := issuedSource(t, rotNew, "n1", clk)
	if got := len(n1.Material().Bundle()); got != 2 {
		t.Fatalf("IssueNode wrote a bundle of %d roots, want both", got)
	}
	oldLeaf := issuedSource(t, rotOld, "n2", clk)
	newLeaf := issuedSource(t, rotNew, "n3", clk)
	stale := issuedSource(t, onlyOld, "n4", clk)

	for _, c := range []struct {
		name string
		cli  *Source
	}{{"old-CA leaf", oldLeaf}, {"new-CA leaf", newLeaf}} {
		t.Run("both roots: "+c.name+" dials in", func(t *testing.T) {
			mustHandshake(t, n1.ServerConfig(), c.cli.ClientConfig("n1"))
		})
		t.Run("both roots: "+c.name+" serves", func(t *testing.T) {
			mustHandshake(t, c.cli.ServerConfig(), n1.ClientConfig(c.cli.Material().Node()))
		})
	}
	t.Run("a node without the new root refuses a new leaf", func(t *testing.T) {
		_, cli := handshake(t, n1.ServerConfig(), stale.ClientConfig("n1"))
		if !errors.Is(cli.err, ErrUntrusted) {
			t.Fatalf("client error %v, want ErrUntrusted", cli.err)
		}
	})
	t.Run("old root dropped: old leaves refused", func(t *testing.T) {
		out := filepath.Join(t.TempDir(), "n1")
		if _, err := IssueNode(onlyNew, "n1", out, IssueOptions{Now: clk.Now}); err != nil {
			t.Fatal(err)
		}
		m, err := LoadMaterial(out)
		if err != nil {
			t.Fatal(err)
		}
		if err := n1.Set(m); err != nil {
			t.Fatal(err)
		}
		srv, _ := handshake(t, n1.ServerConfig(), oldLeaf.ClientConfig("n1"))
		if Reason(srv.err) != ReasonUntrusted {
			t.Fatalf("server error %v (%s), want %s", srv.err, Reason(srv.err), ReasonUntrusted)
		}
		mustHandshake(t, n1.ServerConfig(), newLeaf.ClientConfig("n1"))
	})
}

// TestRotationAppliesToLiveConfigs: a config made before a swap serves
// the new certificate afterwards; nothing is rebuilt or restarted.
func TestRotationAppliesToLiveConfigs(t *testing.T) {
	w := newWorld(t)
	srvCfg, cliCfg := w.n1.ServerConfig(), w.n2.ClientConfig("n1")
	cliCfg.ClientSessionCache = nil // full handshakes only
	_, before := mustHandshake(t, srvCfg, cliCfg)
	w.clk.Advance(12 * time.Hour)
	m := issue(t, w.ca, "n1", w.clk)
	if err := w.n1.Set(m); err != nil {
		t.Fatal(err)
	}
	_, after := mustHandshake(t, srvCfg, cliCfg)
	if before.state.PeerCertificates[0].Equal(after.state.PeerCertificates[0]) || !after.state.PeerCertificates[0].Equal(m.Leaf()) {
		t.Fatal("the live config still serves the old certificate")
	}
}
