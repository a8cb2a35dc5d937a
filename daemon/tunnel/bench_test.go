package tunnel

import (
	"context"
	"io"
	"net"
	"net/netip"
	"testing"
)

// The tunnel's cost side by side, on loopback: a new tunnelled connection
// with a ready TLS connection, with a fresh (resumed) TLS handshake, and
// the plaintext header exchange of version 1 as the floor; then a 1-byte
// request/response over an established tunnel, TLS and plain.
//
//	go test -run - -bench . ./daemon/tunnel/

// echoApp accepts connections and echoes every byte.
func echoApp(b *testing.B) netip.AddrPort { return echoAppTB(b) }

func echoAppTB(b testing.TB) netip.AddrPort {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { io.Copy(c, c); c.Close() }()
		}
	}()
	return ln.Addr().(*net.TCPAddr).AddrPort()
}

func benchServer(b *testing.B, i *ids) Node {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	s := &Server{TLS: i.n2.ServerConfig(), Dialer: &localDialer{}, Relay: testRelay}
	ctx, cancel := context.WithCancel(context.Background())
	go s.Serve(ctx, ln)
	b.Cleanup(cancel)
	return Node{Name: "n2", Addr: ln.Addr().(*net.TCPAddr).AddrPort()}
}

func benchIDs(b *testing.B) *ids { return newIDsTB(b) }

func BenchmarkDial(b *testing.B) {
	i := benchIDs(b)
	app := echoApp(b)
	node := benchServer(b, i)
	for _, bc := range []struct {
		name string
		warm int
	}{{"ready", 4}, {"handshake", -1}} {
		b.Run(bc.name, func(b *testing.B) {
			cl := &Client{TLS: i.n1.ClientConfig, Warm: bc.warm}
			defer cl.Close()
			for b.Loop() {
				c, err := cl.Dial(context.Background(), node, Header{Dst: app})
				if err != nil {
					b.Fatal(err)
				}
				c.Close()
			}
		})
	}
	b.Run("plaintext-v1-floor", func(b *testing.B) {
		srv := plainServer(b, app)
		hdr, _ := Header{Dst: app}.MarshalBinary()
		for b.Loop() {
			c, err := net.Dial("tcp", srv.String())
			if err != nil {
				b.Fatal(err)
			}
			if _, _, err := handshake(c, hdr); err != nil {
				b.Fatal(err)
			}
			c.Close()
		}
	})
}

// plainServer answers a header in plaintext after dialing the app: the
// version 1 tunnel, as the floor of what a tunnelled connection costs.
func plainServer(b *testing.B, app netip.AddrPort) netip.AddrPort {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				if _, err := ReadHeader(c); err != nil {
					return
				}
				t, err := net.Dial("tcp", app.String())
				if err != nil {
					return
				}
				defer t.Close()
				r := reply(StatusOK)
				c.Write(r[:])
				go func() {
					io.Copy(t, c)
					t.(*net.TCPConn).CloseWrite()
				}()
				io.Copy(c, t)
			}()
		}
	}()
	return ln.Addr().(*net.TCPAddr).AddrPort()
}

func BenchmarkRoundTrip(b *testing.B) {
	i := benchIDs(b)
	app := echoApp(b)
	node := benchServer(b, i)
	rt := func(b *testing.B, c net.Conn) {
		var buf [1]byte
		for b.Loop() {
			if _, err := c.Write(buf[:]); err != nil {
				b.Fatal(err)
			}
			if _, err := io.ReadFull(c, buf[:]); err != nil {
				b.Fatal(err)
			}
		}
	}
	b.Run("tls", func(b *testing.B) {
		c, err := (&Client{TLS: i.n1.ClientConfig, Warm: -1}).Dial(context.Background(), node, Header{Dst: app})
		if err != nil {
			b.Fatal(err)
		}
		defer c.Close()
		rt(b, c)
	})
	b.Run("plaintext-v1-floor", func(b *testing.B) {
		srv := plainServer(b, app)
		c, err := net.Dial("tcp", srv.String())
		if err != nil {
			b.Fatal(err)
		}
		defer c.Close()
		hdr, _ := Header{Dst: app}.MarshalBinary()
		if _, _, err := handshake(c, hdr); err != nil {
			b.Fatal(err)
		}
		rt(b, c)
	})
}
