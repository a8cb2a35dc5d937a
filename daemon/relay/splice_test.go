package relay

import (
	"context"
	"errors"
	"io"
	"net"
	"syscall"
	"testing"
	"time"
)

// pair returns the two ends of a loopback TCP connection.
func pair(t *testing.T) (client, server *net.TCPConn) {
	t.Helper()
	ln, err := net.ListenTCP("tcp4", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	type res struct {
		c   *net.TCPConn
		err error
	}
	ch := make(chan res, 1)
	go func() {
		c, err := ln.AcceptTCP()
		ch <- res{c, err}
	}()
	client, err = net.DialTCP("tcp4", nil, ln.Addr().(*net.TCPAddr))
	if err != nil {
		t.Fatal(err)
	}
	r := <-ch
	if r.err != nil {
		t.Fatal(r.err)
	}
	t.Cleanup(func() { client.Close(); r.c.Close() })
	return client, r.c
}

// setup builds app <-> (a pump b) <-> upstream and runs the pump.
func setup(t *testing.T, ctx context.Context, o Options) (app, upstream *net.TCPConn, done chan Result) {
	app, a := pair(t)
	b, upstream := pair(t)
	// Deadlines turn a missing FIN into a test failure, not a hang.
	app.SetDeadline(time.Now().Add(10 * time.Second))
	upstream.SetDeadline(time.Now().Add(10 * time.Second))
	done = make(chan Result, 1)
	go func() { done <- Run(ctx, a, b, o) }()
	return app, upstream, done
}

func wait(t *testing.T, done chan Result) Result {
	t.Helper()
	select {
	case r := <-done:
		return r
	case <-time.After(10 * time.Second):
		t.Fatal("pump did not end")
		return Result{}
	}
}

func TestHalfClose(t *testing.T) {
	tests := []struct{ req, resp string }{
		{"ping", "pong"},
		{"", "only a reply"},
		{string(make([]byte, 1<<20)), "big request"},
	}
	for _, tt := range tests {
		app, upstream, done := setup(t, context.Background(), Options{})
		go func() {
			app.Write([]byte(tt.req))
			app.CloseWrite()
		}()
		got, err := io.ReadAll(upstream)
		if err != nil || string(got) != tt.req {
			t.Fatalf("upstream read %d bytes, err %v; want %d bytes", len(got), err, len(tt.req))
		}
		// The client's FIN arrived, yet the upstream can still answer.
		if _, err := upstream.Write([]byte(tt.resp)); err != nil {
			t.Fatal(err)
		}
		upstream.CloseWrite()
		back, err := io.ReadAll(app)
		if err != nil || string(back) != tt.resp {
			t.Fatalf("app read %q, %v; want %q", back, err, tt.resp)
		}
		r := wait(t, done)
		if r.Err != nil || r.AToB != int64(len(tt.req)) || r.BToA != int64(len(tt.resp)) {
			t.Errorf("result %+v, want clean with %d/%d bytes", r, len(tt.req), len(tt.resp))
		}
	}
}

func TestResetPropagates(t *testing.T) {
	app, upstream, done := setup(t, context.Background(), Options{})
	if _, err := app.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 1)
	if _, err := io.ReadFull(upstream, buf); err != nil {
		t.Fatal(err)
	}
	upstream.SetLinger(0)
	upstream.Close() // RST towards the pump
	_, err := io.ReadAll(app)
	if !errors.Is(err, syscall.ECONNRESET) {
		t.Errorf("app read ended with %v, want connection reset", err)
	}
	if r := wait(t, done); r.Err == nil {
		t.Error("pump result has no error after a reset")
	}
}

func TestCancelAndIdle(t *testing.T) {
	tests := []struct {
		name    string
		cancel  bool
		idle    time.Duration
		wantErr error
	}{
		{"cancel", true, 0, context.Canceled},
		{"idle", false, 50 * time.Millisecond, ErrIdle},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			app, _, done := setup(t, ctx, Options{IdleTimeout: tt.idle})
			if tt.cancel {
				cancel()
			}
			if _, err := io.ReadAll(app); err == nil && tt.cancel {
				t.Error("app saw a clean EOF after cancel, want a reset")
			}
			if r := wait(t, done); !errors.Is(r.Err, tt.wantErr) {
				t.Errorf("pump error %v, want %v", r.Err, tt.wantErr)
			}
		})
	}
}
