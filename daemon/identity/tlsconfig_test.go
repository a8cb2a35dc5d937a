package identity

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"testing"
	"time"
)

// world is two nodes of one trust domain, n1 serving and n2 dialing, plus
// a foreign CA, all on one fake clock.
type world struct {
	clk     *fakeClock
	ca      *CA
	foreign *CA
	n1, n2  *Source
}

func newWorld(t *testing.T) *world {
	clk := newClock()
	w := &world{clk: clk, ca: mustCA(t, clk), foreign: mustCA(t, clk)}
	w.n1 = newTestSource(t, w.ca, "n1", clk)
	w.n2 = newTestSource(t, w.ca, "n2", clk)
	return w
}

// refusal is one reason a tunnel end refuses the other.
type refusal struct {
	name string
	// build returns the server and client configs: the bad pair when
	// bad, else the good twin that differs in the one defect.
	build func(t *testing.T, w *world, bad bool) (srv, cli *tls.Config)
	// refuser is the side whose handshake fails with want.
	refuser    string
	want       error
	wantReason string
	// otherReason is what the other side sees: a refusal of its
	// certificate unless said otherwise.
	otherReason string
}

// refusals are the cases of TestHandshakeRefusals.
var refusals = []refusal{
	{
		name: "client from another CA",
		build: func(t *testing.T, w *world, bad bool) (*tls.Config, *tls.Config) {
			ca := pick(bad, w.foreign, w.ca)
			return w.n1.ServerConfig(), rawClient(signLeaf(t, ca, validSpec(w.clk, nodeURI("n2"))), w.clk)
		},
		refuser: "server", want: ErrUntrusted, wantReason: ReasonUntrusted,
	},
	{
		name: "server from another CA",
		build: func(t *testing.T, w *world, bad bool) (*tls.Config, *tls.Config) {
			ca := pick(bad, w.foreign, w.ca)
			return rawServer(signLeaf(t, ca, validSpec(w.clk, nodeURI("n1"))), w.clk), w.n2.ClientConfig("n1")
		},
		refuser: "client", want: ErrUntrusted, wantReason: ReasonUntrusted,
	},
	{
		name: "client of another trust domain",
		build: func(t *testing.T, w *world, bad bool) (*tls.Config, *tls.Config) {
			uri := pick(bad, "spiffe://other.example/meshless/node/n2", nodeURI("n2"))
			return w.n1.ServerConfig(), rawClient(signLeaf(t, w.ca, validSpec(w.clk, uri)), w.clk)
		},
		refuser: "server", want: ErrTrustDomain, wantReason: ReasonTrustDomain,
	},
	{
		name: "server of another trust domain",
		build: func(t *testing.T, w *world, bad bool) (*tls.Config, *tls.Config) {
			uri := pick(bad, "spiffe://other.example/meshless/node/n1", nodeURI("n1"))
			return rawServer(signLeaf(t, w.ca, validSpec(w.clk, uri)), w.clk), w.n2.ClientConfig("n1")
		},
		refuser: "client", want: ErrTrustDomain, wantReason: ReasonTrustDomain,
	},
	{
		name: "expired client",
		build: func(t *testing.T, w *world, bad bool) (*tls.Config, *tls.Config) {
			spec := validSpec(w.clk, nodeURI("n2"))
			if bad {
				spec.notAfter = w.clk.Now().Add(-time.Second)
			}
			return w.n1.ServerConfig(), rawClient(signLeaf(t, w.ca, spec), w.clk)
		},
		refuser: "server", want: ErrExpired, wantReason: ReasonExpired,
	},
	{
		name: "server not yet valid",
		build: func(t *testing.T, w *world, bad bool) (*tls.Config, *tls.Config) {
			spec := validSpec(w.clk, nodeURI("n1"))
			if bad {
				spec.notBefore = w.clk.Now().Add(time.Minute)
			}
			return rawServer(signLeaf(t, w.ca, spec), w.clk), w.n2.ClientConfig("n1")
		},
		refuser: "client", want: ErrExpired, wantReason: ReasonExpired,
	},
	{
		name: "server is another node",
		build: func(t *testing.T, w *world, bad bool) (*tls.Config, *tls.Config) {
			return w.n1.ServerConfig(), w.n2.ClientConfig(pick(bad, "n3", "n1"))
		},
		refuser: "client", want: ErrWrongPeer, wantReason: ReasonWrongPeer,
	},
	{
		name: "client without certificate",
		build: func(t *testing.T, w *world, bad bool) (*tls.Config, *tls.Config) {
			cert := signLeaf(t, w.ca, validSpec(w.clk, nodeURI("n2")))
			if bad {
				cert = tls.Certificate{}
			}
			return w.n1.ServerConfig(), rawClient(cert, w.clk)
		},
		refuser: "server", want: ErrNoCertificate, wantReason: ReasonNoCert,
	},
	{
		name: "client with a workload identity",
		build: func(t *testing.T, w *world, bad bool) (*tls.Config, *tls.Config) {
			uri := pick(bad, "spiffe://cluster.local/ns/default/sa/web", nodeURI("n2"))
			return w.n1.ServerConfig(), rawClient(signLeaf(t, w.ca, validSpec(w.clk, uri)), w.clk)
		},
		refuser: "server", want: ErrNotNode, wantReason: ReasonNotNode,
	},
	{
		name: "client with a DNS SAN besides its ID",
		build: func(t *testing.T, w *world, bad bool) (*tls.Config, *tls.Config) {
			spec := validSpec(w.clk, nodeURI("n2"))
			if bad {
				spec.dns = []string{"n2.example"}
			}
			return w.n1.ServerConfig(), rawClient(signLeaf(t, w.ca, spec), w.clk)
		},
		refuser: "server", want: ErrNotNode, wantReason: ReasonNotNode,
	},
	{
		name: "server certificate without serverAuth",
		build: func(t *testing.T, w *world, bad bool) (*tls.Config, *tls.Config) {
			spec := validSpec(w.clk, nodeURI("n1"))
			if bad {
				spec.eku = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
			}
			return rawServer(signLeaf(t, w.ca, spec), w.clk), w.n2.ClientConfig("n1")
		},
		refuser: "client", want: ErrNotNode, wantReason: ReasonNotNode,
	},
	{
		name: "client presents a CA certificate",
		build: func(t *testing.T, w *world, bad bool) (*tls.Config, *tls.Config) {
			spec := validSpec(w.clk, nodeURI("n2"))
			spec.isCA = bad
			return w.n1.ServerConfig(), rawClient(signLeaf(t, w.ca, spec), w.clk)
		},
		refuser: "server", want: ErrNotNode, wantReason: ReasonNotNode,
	},
	{
		name: "server without material",
		build: func(t *testing.T, w *world, bad bool) (*tls.Config, *tls.Config) {
			if !bad {
				return w.n1.ServerConfig(), w.n2.ClientConfig("n1")
			}
			empty, err := NewSource(Options{Node: "n1", Now: w.clk.Now, Logger: discardLogger()})
			if err != nil {
				t.Fatal(err)
			}
			return empty.ServerConfig(), w.n2.ClientConfig("n1")
		},
		refuser: "server", want: ErrNoIdentity, wantReason: ReasonNoIdentity, otherReason: ReasonHandshake,
	},
}

// TestHandshakeRefusals runs, for every reason a tunnel end refuses the
// other, a real handshake that is refused for that reason and the same
// handshake with the one defect removed, which must succeed.
func TestHandshakeRefusals(t *testing.T) {
	for _, tt := range refusals {
		t.Run(tt.name, func(t *testing.T) {
			w := newWorld(t)
			t.Run("allowed", func(t *testing.T) {
				sc, cc := tt.build(t, w, false)
				srv, cli := handshake(t, sc, cc)
				if srv.err != nil || cli.err != nil {
					t.Fatalf("server: %v; client: %v", srv.err, cli.err)
				}
				checkPeers(t, srv, cli)
			})
			t.Run("refused", func(t *testing.T) {
				sc, cc := tt.build(t, w, true)
				srv, cli := handshake(t, sc, cc)
				refused, other := srv, cli
				if tt.refuser == "client" {
					refused, other = cli, srv
				}
				if !errors.Is(refused.err, tt.want) {
					t.Fatalf("%s error %v, want %v", tt.refuser, refused.err, tt.want)
				}
				if got := Reason(refused.err); got != tt.wantReason {
					t.Errorf("Reason(%v) = %q, want %q", refused.err, got, tt.wantReason)
				}
				wantOther := pick(tt.otherReason == "", ReasonPeerRefused, tt.otherReason)
				if got := Reason(other.err); got != wantOther {
					t.Errorf("other side: Reason(%v) = %q, want %q", other.err, got, wantOther)
				}
				t.Logf("%s: %v; other side (%s): %v", tt.refuser, refused.err, Reason(other.err), other.err)
			})
		})
	}
}

// checkPeers checks what each side of a successful handshake learns
// about the other with PeerNode, for the sides made from Sources (raw
// peers have arbitrary names).
func checkPeers(t *testing.T, srv, cli side) {
	t.Helper()
	if srv.state.Version != tls.VersionTLS13 {
		t.Errorf("version %x, want TLS 1.3", srv.state.Version)
	}
	if n, err := PeerNode(srv.state); err != nil || n != "n2" {
		t.Errorf("server's PeerNode = %q, %v; want n2", n, err)
	}
	if n, err := PeerNode(cli.state); err != nil || n != "n1" {
		t.Errorf("client's PeerNode = %q, %v; want n1", n, err)
	}
}

func pick[T any](bad bool, ifBad, ifGood T) T {
	if bad {
		return ifBad
	}
	return ifGood
}

// TestPlaintextRefused: a version-1 plaintext tunnel header on the TLS
// port is refused as not TLS.
func TestPlaintextRefused(t *testing.T) {
	w := newWorld(t)
	hdr := []byte("MLTN\x01\x00\x00\x10\x04\xc6\x13\x02\x02\x1f\x90")
	got := plainClient(t, w.n1.ServerConfig(), hdr)
	if Reason(got.err) != ReasonPlaintext {
		t.Fatalf("Reason(%v) = %q, want %q", got.err, Reason(got.err), ReasonPlaintext)
	}
}

// TestTLS12Refused: a client that offers at most TLS 1.2 gets no
// handshake.
func TestTLS12Refused(t *testing.T) {
	w := newWorld(t)
	cli := rawClient(signLeaf(t, w.ca, validSpec(w.clk, nodeURI("n2"))), w.clk)
	cli.MinVersion, cli.MaxVersion = tls.VersionTLS12, tls.VersionTLS12
	srv, _ := handshake(t, w.n1.ServerConfig(), cli)
	if srv.err == nil || Reason(srv.err) != ReasonHandshake {
		t.Fatalf("server error %v (%s), want a refused TLS 1.2 handshake", srv.err, Reason(srv.err))
	}
}

// TestClientWithoutExpectedNode: a client config for "" refuses every
// server rather than accepting any node.
func TestClientWithoutExpectedNode(t *testing.T) {
	w := newWorld(t)
	_, cli := handshake(t, w.n1.ServerConfig(), w.n2.ClientConfig(""))
	if !errors.Is(cli.err, ErrWrongPeer) {
		t.Fatalf("client error %v, want ErrWrongPeer", cli.err)
	}
}

func TestPeerNode(t *testing.T) {
	clk := newClock()
	ca := mustCA(t, clk)
	leaf := func(uri string) []*x509.Certificate {
		return []*x509.Certificate{signLeaf(t, ca, validSpec(clk, uri)).Leaf}
	}
	tests := []struct {
		name string
		cs   tls.ConnectionState
		want string
		err  error
	}{
		{"node", tls.ConnectionState{HandshakeComplete: true, PeerCertificates: leaf(nodeURI("n7"))}, "n7", nil},
		{"incomplete", tls.ConnectionState{PeerCertificates: leaf(nodeURI("n7"))}, "", nil},
		{"no certificate", tls.ConnectionState{HandshakeComplete: true}, "", ErrNoCertificate},
		{"workload", tls.ConnectionState{HandshakeComplete: true, PeerCertificates: leaf("spiffe://cluster.local/ns/a/sa/b")}, "", ErrNotNode},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := PeerNode(tt.cs)
			if got != tt.want || (tt.want == "") != (err != nil) {
				t.Fatalf("PeerNode = %q, %v; want %q", got, err, tt.want)
			}
			if tt.err != nil && !errors.Is(err, tt.err) {
				t.Fatalf("error %v, want %v", err, tt.err)
			}
		})
	}
}

func TestReason(t *testing.T) {
	remote := func(a tls.AlertError) error {
		// What crypto/tls returns for a received alert, around its
		// unexported alert type; AlertError has the same text.
		return fmt.Errorf("read: %w", &net.OpError{Op: "remote error", Err: errors.New(a.Error())})
	}
	tests := []struct {
		err  error
		want string
	}{
		{nil, ""},
		{ErrUntrusted, ReasonUntrusted},
		{fmt.Errorf("peer x: %w: %w", ErrUntrusted, errors.New("x509: unknown authority")), ReasonUntrusted},
		{fmt.Errorf("peer x: %w", ErrTrustDomain), ReasonTrustDomain},
		{fmt.Errorf("peer x: %w", ErrExpired), ReasonExpired},
		{fmt.Errorf("peer x: %w", ErrWrongPeer), ReasonWrongPeer},
		{fmt.Errorf("peer x: %w", ErrNotNode), ReasonNotNode},
		{fmt.Errorf("peer x: %w", ErrNoCertificate), ReasonNoCert},
		{fmt.Errorf("own: %w", ErrNoIdentity), ReasonNoIdentity},
		{tls.RecordHeaderError{Msg: "first record does not look like a TLS handshake"}, ReasonPlaintext},
		{remote(42), ReasonPeerRefused},  // bad_certificate
		{remote(116), ReasonPeerRefused}, // certificate_required
		{remote(80), ReasonHandshake},    // internal_error
		{&net.OpError{Op: "read", Err: errors.New("tls: bad certificate")}, ReasonHandshake},
		{io.EOF, ReasonHandshake},
		{errors.New("tls: protocol version not supported"), ReasonHandshake},
	}
	for _, tt := range tests {
		if got := Reason(tt.err); got != tt.want {
			t.Errorf("Reason(%v) = %q, want %q", tt.err, got, tt.want)
		}
	}
}
