package native

import (
	"errors"
	"net"
	"path/filepath"
	"testing"
	"time"
)

// rawExchange connects to the daemon of dir, sends in (then half-closes
// when closeWrite), and reads the reply.
func rawExchange(t *testing.T, dir string, in []byte, closeWrite bool) (Reply, time.Duration) {
	t.Helper()
	c, err := net.DialUnix("unix", nil, &net.UnixAddr{Name: filepath.Join(dir, ClientSocket), Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	start := time.Now()
	if _, err := c.Write(in); err != nil {
		t.Fatal(err)
	}
	if closeWrite {
		c.CloseWrite()
	}
	rep, err := ReadReply(c)
	if err != nil {
		t.Fatalf("no reply: %v", err)
	}
	// Then the daemon closes.
	if n, err := c.Read(make([]byte, 1)); n != 0 || err == nil {
		t.Errorf("after the refusal: %d bytes, %v", n, err)
	}
	return rep, time.Since(start)
}

func TestDaemonAnswersBadRequests(t *testing.T) {
	dir := nativeDir(t)
	d := startDaemon(t, dir, 200*time.Millisecond)
	good := names("shop", "frontend", "web")
	tests := []struct {
		name       string
		in         []byte
		closeWrite bool
		want       Status
		wantErr    error
	}{
		{"http", []byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"), false, StatusMalformed, ErrBadMagic},
		{"version 2", raw(2, 0, -1, good...), false, StatusBadVersion, ErrBadVersion},
		{"flags", raw(1, 0x80, -1, good...), false, StatusMalformed, ErrMalformed},
		// Refused on its prefix: the daemon does not wait for the 64 KiB
		// it announces.
		{"oversized", raw(1, 0, 0xffff), false, StatusTooLong, ErrTooLong},
		{"bad name", raw(1, 0, -1, names("shop", "frontend", "../../etc")...), false, StatusMalformed, ErrMalformed},
		{"truncated then closed", raw(1, 0, 40, good...), true, StatusMalformed, nil},
		{"slow prefix", []byte("MLN"), false, StatusTimeout, nil},
		{"slow body", raw(1, 0, 40, good...), false, StatusTimeout, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rep, took := rawExchange(t, dir, tt.in, tt.closeWrite)
			if rep.Status != tt.want || rep.Version != Version || rep.Handoff {
				t.Errorf("reply %+v, want status %v", rep, tt.want)
			}
			res := <-d.results
			if res.err == nil || tt.wantErr != nil && !errors.Is(res.err, tt.wantErr) {
				t.Errorf("daemon's error %v, want %v", res.err, tt.wantErr)
			}
			// Only a slow client makes the daemon wait, and only for its
			// request timeout.
			slow := tt.want == StatusTimeout
			if !slow && took > 100*time.Millisecond || slow && took > 2*time.Second {
				t.Errorf("answered after %v", took)
			}
		})
	}
}

func TestDaemonKeepsPipelinedBytes(t *testing.T) {
	// A client that sends application bytes right behind its request,
	// against the protocol's advice, loses none to a relaying daemon:
	// ReadRequest reads the request and nothing more.
	dir := nativeDir(t)
	startDaemon(t, dir, 0)
	c, err := net.DialUnix("unix", nil, &net.UnixAddr{Name: filepath.Join(dir, ClientSocket), Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	req, _ := Request{"shop", "frontend", "echo"}.MarshalBinary()
	p := payload(t)[:4096]
	go func() {
		c.Write(append(req, p...))
		c.CloseWrite()
	}()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if rep, err := ReadReply(c); err != nil || rep.Status != StatusOK {
		t.Fatalf("reply %+v, %v", rep, err)
	}
	got := make([]byte, 0, len(p))
	buf := make([]byte, 1024)
	for {
		n, err := c.Read(buf)
		got = append(got, buf[:n]...)
		if err != nil {
			break
		}
	}
	if string(got) != string(p) {
		t.Fatalf("echoed %d bytes, sent %d", len(got), len(p))
	}
}
