package identity

import (
	"crypto/tls"
	"errors"
	"testing"
	"time"
)

// mustHandshake is a handshake that both sides must complete; it returns
// whether it was resumed, and checks that it was not resumed on one side
// only.
func mustHandshake(t *testing.T, srvCfg, cliCfg *tls.Config) (srv, cli side) {
	t.Helper()
	srv, cli = handshake(t, srvCfg, cliCfg)
	if srv.err != nil || cli.err != nil {
		t.Fatalf("handshake: server %v; client %v", srv.err, cli.err)
	}
	if srv.state.DidResume != cli.state.DidResume {
		t.Fatalf("resumed on one side only: server %v, client %v", srv.state.DidResume, cli.state.DidResume)
	}
	return srv, cli
}

// TestResumptionVerifiesPeers: the second handshake with the same configs
// is resumed, and still yields verified peer nodes on both sides.
func TestResumptionVerifiesPeers(t *testing.T) {
	w := newWorld(t)
	srvCfg, cliCfg := w.n1.ServerConfig(), w.n2.ClientConfig("n1")
	if srv, _ := mustHandshake(t, srvCfg, cliCfg); srv.state.DidResume {
		t.Fatal("first handshake resumed")
	}
	for i := range 3 {
		srv, cli := mustHandshake(t, srvCfg, cliCfg)
		if !srv.state.DidResume {
			t.Fatalf("handshake %d not resumed", i+2)
		}
		checkPeers(t, srv, cli)
	}
}

// TestResumptionStillChecksIdentity: a session offered where it does not
// belong (a session cache that ignores the expected node, the way a
// careless caller could share one) is still judged by VerifyConnection:
// the resumed handshake to the "wrong" node is refused, not waved through.
func TestResumptionStillChecksIdentity(t *testing.T) {
	w := newWorld(t)
	srvCfg := w.n1.ServerConfig()
	// One server name, so that crypto/tls's own cache key matches.
	shared := tls.NewLRUClientSessionCache(4)
	good := w.n2.ClientConfig("n1")
	good.ClientSessionCache, good.ServerName = shared, "tunnel"
	mustHandshake(t, srvCfg, good)

	bad := w.n2.ClientConfig("n3")
	bad.ClientSessionCache, bad.ServerName = shared, "tunnel"
	var resumedVerify bool
	verify := bad.VerifyConnection
	bad.VerifyConnection = func(cs tls.ConnectionState) error {
		resumedVerify = resumedVerify || cs.DidResume
		return verify(cs)
	}
	_, cli := handshake(t, srvCfg, bad)
	if !resumedVerify {
		t.Fatal("the handshake was not a resumption; the test proves nothing")
	}
	if !errors.Is(cli.err, ErrWrongPeer) {
		t.Fatalf("client error %v, want ErrWrongPeer on the resumed session", cli.err)
	}
}

// TestResumptionAfterRotation: after either side swaps its material, the
// next handshake is a full one that shows the new certificate to the
// peer; then sessions resume again.
func TestResumptionAfterRotation(t *testing.T) {
	for _, rotate := range []string{"server", "client"} {
		t.Run(rotate, func(t *testing.T) {
			w := newWorld(t)
			srvCfg, cliCfg := w.n1.ServerConfig(), w.n2.ClientConfig("n1")
			mustHandshake(t, srvCfg, cliCfg)
			if srv, _ := mustHandshake(t, srvCfg, cliCfg); !srv.state.DidResume {
				t.Fatal("not resumed before the rotation")
			}
			w.clk.Advance(12 * time.Hour)
			src, node := w.n1, "n1"
			if rotate == "client" {
				src, node = w.n2, "n2"
			}
			m := issue(t, w.ca, node, w.clk)
			if err := src.Set(m); err != nil {
				t.Fatal(err)
			}
			srv, cli := mustHandshake(t, srvCfg, cliCfg)
			if srv.state.DidResume {
				t.Fatal("resumed a session of the old material")
			}
			seen := cli.state.PeerCertificates[0]
			if rotate == "client" {
				seen = srv.state.PeerCertificates[0]
			}
			if !seen.Equal(m.Leaf()) {
				t.Fatalf("peer saw serial %x, want the new %x", seen.SerialNumber, m.Leaf().SerialNumber)
			}
			if srv, _ := mustHandshake(t, srvCfg, cliCfg); !srv.state.DidResume {
				t.Fatal("not resumed after the rotation")
			}
		})
	}
}

// TestResumptionHonoursExpiry: a client whose certificate expired after
// its session was made gets no resumption; the full handshake then
// refuses the expired certificate.
func TestResumptionHonoursExpiry(t *testing.T) {
	w := newWorld(t)
	spec := validSpec(w.clk, nodeURI("n2"))
	spec.notAfter = w.clk.Now().Add(time.Hour)
	cli := rawClient(signLeaf(t, w.ca, spec), w.clk)
	cli.ClientSessionCache, cli.ServerName = tls.NewLRUClientSessionCache(4), "n1"
	srvCfg := w.n1.ServerConfig()
	mustHandshake(t, srvCfg, cli)
	if srv, _ := mustHandshake(t, srvCfg, cli); !srv.state.DidResume {
		t.Fatal("not resumed while valid")
	}
	w.clk.Advance(2 * time.Hour)
	srv, _ := handshake(t, srvCfg, cli)
	if srv.state.DidResume {
		t.Fatal("resumed a session of an expired certificate")
	}
	if !errors.Is(srv.err, ErrExpired) {
		t.Fatalf("server error %v, want ErrExpired", srv.err)
	}
}

// TestResumptionOff: a negative SessionCacheSize turns resumption off on
// both sides.
func TestResumptionOff(t *testing.T) {
	clk := newClock()
	ca := mustCA(t, clk)
	mk := func(node string) *Source {
		s, err := NewSource(Options{Node: node, Now: clk.Now, SessionCacheSize: -1, Logger: discardLogger()})
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Set(issue(t, ca, node, clk)); err != nil {
			t.Fatal(err)
		}
		return s
	}
	n1, n2 := mk("n1"), mk("n2")
	srvCfg, cliCfg := n1.ServerConfig(), n2.ClientConfig("n1")
	for range 2 {
		if srv, _ := mustHandshake(t, srvCfg, cliCfg); srv.state.DidResume {
			t.Fatal("resumed with resumption off")
		}
	}
	if !srvCfg.SessionTicketsDisabled || cliCfg.ClientSessionCache != nil {
		t.Fatal("tickets or client cache still configured")
	}
}
