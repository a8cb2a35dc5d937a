package identity

import (
	"crypto/tls"
	"io"
	"log/slog"
	"net"
	"testing"
	"time"
)

// Helpers for tests that run real TLS handshakes between Sources and
// hand-made peers.

// newTestSource is a Source for node with material from ca, on clk.
func newTestSource(t testing.TB, ca *CA, node string, clk *fakeClock) *Source {
	t.Helper()
	s, err := NewSource(Options{Node: node, Now: clk.Now, Logger: discardLogger()})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Set(issue(t, ca, node, clk)); err != nil {
		t.Fatal(err)
	}
	return s
}

// rawClient is a client config that presents cert (none if empty) and
// checks nothing, to play a misbehaving or foreign peer.
func rawClient(cert tls.Certificate, clk *fakeClock) *tls.Config {
	cfg := &tls.Config{MinVersion: tls.VersionTLS13, InsecureSkipVerify: true, Time: clk.Now}
	if cert.Leaf != nil {
		cfg.Certificates = []tls.Certificate{cert}
	}
	return cfg
}

// rawServer is a server config that presents cert and asks for, but does
// not check, a client certificate.
func rawServer(cert tls.Certificate, clk *fakeClock) *tls.Config {
	return &tls.Config{MinVersion: tls.VersionTLS13, Certificates: []tls.Certificate{cert},
		ClientAuth: tls.RequestClientCert, Time: clk.Now}
}

// side is one end's view of a handshake: its error (the handshake's, or
// for a client, that of the first read, where TLS 1.3 reports a server's
// refusal of the client certificate) and its connection state.
type side struct {
	err   error
	state tls.ConnectionState
}

// tcpPair is a connected pair of loopback TCP connections. Not net.Pipe:
// it has no buffer, and in a resumed TLS 1.3 handshake both sides write
// at once (the server's session ticket, the client's Finished), which
// deadlocks on a pipe; crypto/tls's own tests use loopback TCP too.
func tcpPair(t testing.TB) (server, client net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			accepted <- nil
			return
		}
		accepted <- c
	}()
	client, err = net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	server = <-accepted
	if server == nil {
		client.Close()
		t.Fatal("accept failed")
	}
	deadline := time.Now().Add(10 * time.Second)
	server.SetDeadline(deadline)
	client.SetDeadline(deadline)
	return server, client
}

// handshake runs a TLS handshake over loopback TCP between a server and a
// client config. On success the server sends one byte that the client
// reads, which also delivers the session ticket to the client.
func handshake(t testing.TB, srvCfg, cliCfg *tls.Config) (srv, cli side) {
	t.Helper()
	a, b := tcpPair(t)
	defer a.Close()
	defer b.Close()
	done := make(chan side, 1)
	go func() {
		c := tls.Server(a, srvCfg)
		err := c.Handshake()
		if err == nil {
			_, err = c.Write([]byte{1})
		}
		done <- side{err: err, state: c.ConnectionState()}
	}()
	c := tls.Client(b, cliCfg)
	cli.err = c.Handshake()
	if cli.err == nil {
		var buf [1]byte
		_, cli.err = io.ReadFull(c, buf[:])
	}
	cli.state = c.ConnectionState()
	srv = <-done
	return srv, cli
}

// plainClient writes bytes that are not TLS, as a version-1 tunnel
// client would, and returns the server's side.
func plainClient(t testing.TB, srvCfg *tls.Config, data []byte) side {
	t.Helper()
	a, b := tcpPair(t)
	defer a.Close()
	defer b.Close()
	if _, err := b.Write(data); err != nil {
		t.Fatal(err)
	}
	c := tls.Server(a, srvCfg)
	err := c.Handshake()
	return side{err: err, state: c.ConnectionState()}
}

func discardLogger() *slog.Logger { return slog.New(slog.DiscardHandler) }
