package native

import (
	"context"
	"crypto/rand"
	"errors"
	"io"
	"net"
	"path/filepath"
	"testing"
	"time"
)

// payload is a megabyte of random bytes: more than any socket buffer, so
// both directions really stream.
func payload(t *testing.T) []byte {
	t.Helper()
	b := make([]byte, 1<<20)
	rand.Read(b)
	return b
}

func dialer(dir string) *Dialer { return &Dialer{Dir: dir, Timeout: 10 * time.Second} }

func TestDialRelayed(t *testing.T) {
	dir := nativeDir(t)
	d := startDaemon(t, dir, 0)
	conn, err := dialer(dir).Dial(context.Background(), "shop/frontend/echo")
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	// Relayed: the connection is the one to the daemon.
	if got := conn.RemoteAddr().String(); got != filepath.Join(dir, ClientSocket) {
		t.Errorf("relayed connection goes to %s", got)
	}
	p := payload(t)
	halfCloseExchange(t, conn, p, p)
	if res := <-d.results; res.err != nil || res.req != (Request{"shop", "frontend", "echo"}) {
		t.Errorf("daemon decoded %+v, %v", res.req, res.err)
	}
}

func TestDialHandoffToListenedServer(t *testing.T) {
	dir := nativeDir(t)
	d := startDaemon(t, dir, 0)
	lc := ListenConfig{Dir: dir}
	ln, err := lc.Listen("web")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	served := make(chan error, 1)
	go func() {
		c, err := ln.Accept()
		if err == nil {
			answerServer(c)
		}
		served <- err
	}()
	conn, err := dialer(dir).Dial(context.Background(), "shop/frontend/web")
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	// Straight to the server's socket: unix, no TCP/IP, no daemon.
	if _, ok := conn.(*net.UnixConn); !ok {
		t.Fatalf("handed-over connection is a %T", conn)
	}
	if got := conn.RemoteAddr().String(); got != filepath.Join(dir, ServerDir, "web") {
		t.Errorf("handed-over connection goes to %s", got)
	}
	p := payload(t)
	halfCloseExchange(t, conn, p, invert(p))
	if err := <-served; err != nil {
		t.Fatal(err)
	}
	// Dial closed its connection to the daemon, which had nothing more
	// to read: the daemon is out of the byte path.
	if res := <-d.results; res.err != nil || !errors.Is(res.afterHandoff, io.EOF) {
		t.Errorf("daemon: %v, after the handoff %v", res.err, res.afterHandoff)
	}
}

func TestDialHandoffSocketpair(t *testing.T) {
	dir := nativeDir(t)
	startDaemon(t, dir, 0)
	base := openFDs(t)
	conn, err := dialer(dir).Dial(context.Background(), "shop/frontend/pair")
	if err != nil {
		t.Fatal(err)
	}
	p := payload(t)
	halfCloseExchange(t, conn, p, invert(p))
	conn.Close()
	waitFDs(t, base)
}

func TestDialBadHandoff(t *testing.T) {
	dir := nativeDir(t)
	startDaemon(t, dir, 0)
	base := openFDs(t)
	conn, err := dialer(dir).Dial(context.Background(), "shop/frontend/dgram")
	if !errors.Is(err, ErrHandoff) {
		if conn != nil {
			conn.Close()
		}
		t.Fatalf("Dial = %v, want ErrHandoff", err)
	}
	waitFDs(t, base)
}

func TestDialRefused(t *testing.T) {
	dir := nativeDir(t)
	startDaemon(t, dir, 0)
	sentinels := map[string]error{
		"gone": ErrUnknownService, "private": ErrNotAllowed, "empty": ErrNoInstance,
		"busy": ErrAllFull, "down": ErrUnreachable, "broken": ErrInternal, "future": ErrRefused,
		"absent": ErrNoInstance, // the test daemon finds no server socket
	}
	for service, sentinel := range sentinels {
		conn, err := dialer(dir).Dial(context.Background(), "shop/frontend/"+service)
		if err == nil {
			conn.Close()
			t.Errorf("%s: Dial succeeded", service)
			continue
		}
		var se *StatusError
		if !errors.As(err, &se) || !errors.Is(err, sentinel) || !errors.Is(err, ErrRefused) {
			t.Errorf("%s: %v is not a refusal matching %v", service, err, sentinel)
			continue
		}
		if want, ok := refusals[service]; ok && (se.Status != want.Status || se.Message != want.Message) {
			t.Errorf("%s: refusal %+v, want %+v", service, se, want)
		}
	}
}

func TestDialContext(t *testing.T) {
	dir := nativeDir(t)
	startDaemon(t, dir, 0)
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	start := time.Now()
	if _, err := dialer(dir).Dial(ctx, "shop/frontend/hang"); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Dial past the context's deadline = %v", err)
	}
	d := &Dialer{Dir: dir, Timeout: 100 * time.Millisecond}
	if _, err := d.Dial(context.Background(), "shop/frontend/hang"); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Dial past the Dialer's Timeout = %v", err)
	}
	ctx, cancel = context.WithCancel(context.Background())
	time.AfterFunc(50*time.Millisecond, cancel)
	if _, err := dialer(dir).Dial(ctx, "shop/frontend/hang"); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled Dial = %v", err)
	}
	if el := time.Since(start); el > 2*time.Second {
		t.Errorf("three short Dials took %v", el)
	}
	// The deadline was for the handshake: a connection lives on.
	conn, err := (&Dialer{Dir: dir, Timeout: 200 * time.Millisecond}).Dial(context.Background(), "shop/frontend/echo")
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	time.Sleep(300 * time.Millisecond)
	halfCloseExchange(t, conn, []byte("late"), []byte("late"))
}

func TestDialErrors(t *testing.T) {
	dir := nativeDir(t)
	if _, err := dialer(dir).Dial(context.Background(), "shop/frontend/web"); err == nil {
		t.Error("Dial with no daemon succeeded")
	}
	startDaemon(t, dir, 0)
	for _, target := range []string{"web", "shop/web", "shop/frontend/Web", "shop/frontend/../web"} {
		if _, err := dialer(dir).Dial(context.Background(), target); !errors.Is(err, ErrMalformed) {
			t.Errorf("Dial(%q) = %v, want ErrMalformed", target, err)
		}
	}
}
