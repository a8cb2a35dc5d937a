package k8s

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/meshless/meshless/daemon/certclient"
	"github.com/meshless/meshless/daemon/identity"
	"github.com/meshless/meshless/install/signer"
	"github.com/meshless/meshless/internal/testenv"
)

// TestSigner runs the signer (install/signer) and the daemon's CSR client
// (daemon/certclient) against a real control plane, each with the
// rights install/kubernetes gives its service account and a token made
// as in a real cluster: pod-bound for the daemon.
func TestSigner(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a control plane")
	}
	c := StartCluster(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	e := newSignerEnv(ctx, t, c)
	t.Cleanup(func() {
		if e.stop != nil {
			e.stop()
		}
	})

	t.Run("rbac", func(t *testing.T) { testSignerRBAC(ctx, t, e) })
	t.Run("daemon admission", func(t *testing.T) { testDaemonAdmission(ctx, t, e) })
	t.Run("binary", func(t *testing.T) { testSignerBinary(ctx, t, e) })
	// The binary again, serving the /meshlet webhook; stopped after it.
	t.Run("webhook", func(t *testing.T) { testWebhook(ctx, t, c) })
	// Before the signer runs: a CSR whose pod is replaced meanwhile.
	uidCase := prepareUIDMismatch(ctx, t, e)
	e.startSigner(ctx, t, signer.DefaultQPS, signer.DefaultBurst)
	t.Run("issue", func(t *testing.T) { testIssue(ctx, t, e) })
	t.Run("refusals", func(t *testing.T) { testRefusals(ctx, t, e, uidCase) })
	t.Run("rotation", func(t *testing.T) { testRotation(ctx, t, e) })
	t.Run("rate", func(t *testing.T) { testIssuanceRate(ctx, t, e) })
}

// daemonNode is a node daemon's identity side: its Source, fed by a
// certclient.Client running with the daemon pod's token.
type daemonNode struct {
	name   string
	src    *identity.Source
	client *certclient.Client
}

func (e *signerEnv) startDaemon(ctx context.Context, t *testing.T, node string) *daemonNode {
	t.Helper()
	log := slog.New(slog.NewTextHandler(testWriter{t}, nil)).With("daemon", node)
	src, err := identity.NewSource(identity.Options{Node: node, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	cfg := e.config(e.podToken(ctx, t, e.pod(ctx, t, signerNS, "meshless-"+node)))
	cl, err := certclient.New(cfg, src, certclient.Options{Node: node, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	rctx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- cl.Run(rctx) }()
	t.Cleanup(func() {
		stop()
		if err := <-done; err != nil {
			t.Errorf("certclient Run: %v", err)
		}
	})
	return &daemonNode{name: node, src: src, client: cl}
}

// waitReady waits for the daemon's first certificate.
func (d *daemonNode) waitReady(t *testing.T) {
	t.Helper()
	select {
	case <-d.client.Ready():
	case <-time.After(30 * time.Second):
		t.Fatalf("%s: no certificate after 30 s", d.name)
	}
}

// testIssue: both daemons get node material through the CSR API, their
// CSRs are gone afterwards, and the two authenticate each other in a
// real mutual TLS handshake, which also refuses the wrong peer.
func testIssue(ctx context.Context, t *testing.T, e *signerEnv) {
	t0 := time.Now()
	n1, n2 := e.startDaemon(ctx, t, "n1"), e.startDaemon(ctx, t, "n2")
	for _, d := range []*daemonNode{n1, n2} {
		d.waitReady(t)
		m := d.src.Material()
		if m.Node() != d.name || m.ID().String() != "spiffe://cluster.local/meshless/node/"+d.name {
			t.Errorf("%s: material of %s (%s)", d.name, m.Node(), m.ID())
		}
		life := m.NotAfter().Sub(m.NotBefore())
		if life < 24*time.Hour || life > 24*time.Hour+2*time.Minute {
			t.Errorf("%s: lifetime %s, want 24 h (plus the backdating)", d.name, life)
		}
		if err := m.Leaf().CheckSignatureFrom(e.ca.Certificate()); err != nil {
			t.Errorf("%s: leaf not signed by the CA: %v", d.name, err)
		}
	}
	t.Logf("two nodes have their certificates %v after their clients started", time.Since(t0).Round(time.Millisecond))

	// No CSR left behind (the clients delete theirs once read).
	csrs, err := e.c.Client.CertificatesV1().CertificateSigningRequests().List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, csr := range csrs.Items {
		if strings.HasPrefix(csr.Name, "meshless-node-") {
			t.Errorf("csr %s left behind", csr.Name)
		}
	}

	// Mutual TLS between the two nodes, with the tunnel's configurations.
	if err := handshake(n2.src, n1.src, "n2", "n1"); err != nil {
		t.Fatalf("n1 -> n2: %v", err)
	}
	if err := handshake(n2.src, n1.src, "n3", "n1"); !errors.Is(err, identity.ErrWrongPeer) {
		t.Fatalf("n1 -> n2 expecting n3: %v, want ErrWrongPeer", err)
	}
}

// handshake dials a TLS server with server's ServerConfig from a client
// with client's ClientConfig(expect), and checks that each side sees the
// other as the node it is.
func handshake(server, client *identity.Source, expect, clientNode string) error {
	ln, err := tls.Listen("tcp", "127.0.0.1:0", server.ServerConfig())
	if err != nil {
		return err
	}
	defer ln.Close()
	peer := make(chan error, 1)
	go func() {
		conn, err := ln.Accept()
		if err != nil {
			peer <- err
			return
		}
		defer conn.Close()
		tc := conn.(*tls.Conn)
		if err := tc.Handshake(); err != nil {
			peer <- err
			return
		}
		node, err := identity.PeerNode(tc.ConnectionState())
		if err == nil && node != clientNode {
			err = fmt.Errorf("server sees client %q, want %q", node, clientNode)
		}
		peer <- err
	}()
	conn, err := tls.Dial("tcp", ln.Addr().String(), client.ClientConfig(expect))
	if err != nil {
		ln.Close()
		<-peer
		return err
	}
	defer conn.Close()
	node, err := identity.PeerNode(conn.ConnectionState())
	if err != nil {
		return err
	}
	if node != expect {
		return fmt.Errorf("client sees server %q, want %q", node, expect)
	}
	return <-peer
}

// waitFor polls cond (see testenv.Eventually) with the test's deadline.
func waitFor(t *testing.T, what string, cond func() error) {
	t.Helper()
	testenv.Eventually(t, 30*time.Second, func() error {
		if err := cond(); err != nil {
			return fmt.Errorf("%s: %w", what, err)
		}
		return nil
	})
}
