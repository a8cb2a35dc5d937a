package identity

import (
	"crypto/tls"
	"io"
	"net"
	"syscall"
	"testing"
	"time"
)

// serveBench accepts on ln until it closes; each connection does the
// server's handshake (when cfg is set), sends one byte and closes.
func serveBench(ln net.Listener, cfg *tls.Config) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		go func() {
			defer c.Close()
			if cfg != nil {
				tc := tls.Server(c, cfg)
				if err := tc.Handshake(); err != nil {
					return
				}
				c = tc
			}
			c.Write([]byte{1})
		}()
	}
}

// BenchmarkHandshake measures a new tunnel connection over loopback from
// dial to the first byte from the server: plain TCP as the baseline, a
// full TLS 1.3 mutual handshake (resumption off), and a resumed one.
func BenchmarkHandshake(b *testing.B) {
	clk := newClock()
	ca := mustCA(b, clk)
	pair := func(cacheSize int) (srv, cli *Source) {
		mk := func(node string) *Source {
			s, err := NewSource(Options{Node: node, Now: clk.Now, SessionCacheSize: cacheSize, Logger: discardLogger()})
			if err != nil {
				b.Fatal(err)
			}
			if err := s.Set(issue(b, ca, node, clk)); err != nil {
				b.Fatal(err)
			}
			return s
		}
		return mk("n1"), mk("n2")
	}
	// The -x25519 variants show what the default post-quantum hybrid key
	// exchange (X25519MLKEM768) costs over classic X25519; both are
	// paid on resumption too, since resumption keeps a fresh ECDHE.
	cases := []struct {
		name       string
		cacheSize  int
		tls        bool
		wantResume bool
		curves     []tls.CurveID
	}{
		{"tcp", 0, false, false, nil},
		{"full", -1, true, false, nil},
		{"resumed", 0, true, true, nil},
		{"full-x25519", -1, true, false, []tls.CurveID{tls.X25519}},
		{"resumed-x25519", 0, true, true, []tls.CurveID{tls.X25519}},
	}
	for _, bc := range cases {
		b.Run(bc.name, func(b *testing.B) {
			srv, cli := pair(bc.cacheSize)
			var srvCfg, cliCfg *tls.Config
			if bc.tls {
				srvCfg, cliCfg = srv.ServerConfig(), cli.ClientConfig("n1")
				srvCfg.CurvePreferences, cliCfg.CurvePreferences = bc.curves, bc.curves
			}
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				b.Fatal(err)
			}
			defer ln.Close()
			go serveBench(ln, srvCfg)
			addr := ln.Addr().String()
			dial := func() bool {
				c, err := net.Dial("tcp", addr)
				if err != nil {
					b.Fatal(err)
				}
				defer c.Close()
				resumed := false
				if cliCfg != nil {
					tc := tls.Client(c, cliCfg)
					if err := tc.Handshake(); err != nil {
						b.Fatal(err)
					}
					resumed = tc.ConnectionState().DidResume
					c = tc
				}
				var buf [1]byte
				if _, err := io.ReadFull(c, buf[:]); err != nil {
					b.Fatal(err)
				}
				return resumed
			}
			dial() // warm up: the first session ticket
			b.ReportAllocs()
			cpu0 := processCPU(b)
			for b.Loop() {
				if dial() != bc.wantResume {
					b.Fatalf("resumed != %v", bc.wantResume)
				}
			}
			// CPU of both ends per connection: steadier than wall time on
			// a busy machine, and what a node pays for them.
			b.ReportMetric(float64((processCPU(b)-cpu0).Microseconds())/float64(b.N), "cpu-µs/op")
		})
	}
}

// processCPU is the user+system CPU time the process has used.
func processCPU(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
