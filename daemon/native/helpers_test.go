package native

import (
	"bytes"
	"io"
	"net"
	"os"
	"syscall"
	"testing"
	"time"
)

// socketPair returns both ends of a unix socketpair of type typ as
// *net.UnixConn.
func socketPair(typ int) (*net.UnixConn, *net.UnixConn, error) {
	fds, err := syscall.Socketpair(syscall.AF_UNIX, typ|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, nil, err
	}
	var conns [2]*net.UnixConn
	for i, fd := range fds {
		f := os.NewFile(uintptr(fd), "socketpair")
		c, err := net.FileConn(f)
		f.Close()
		if err != nil {
			return nil, nil, err
		}
		conns[i] = c.(*net.UnixConn)
	}
	return conns[0], conns[1], nil
}

// answerServer reads everything the client sends, up to its half-close,
// then answers with the same bytes inverted and closes: a client that
// gets the inverse of what it sent proves both directions byte-exact and
// that its CloseWrite arrived as EOF.
func answerServer(c net.Conn) {
	defer c.Close()
	b, err := io.ReadAll(c)
	if err != nil {
		return
	}
	c.Write(invert(b))
}

// invert returns b with every bit flipped.
func invert(b []byte) []byte {
	out := make([]byte, len(b))
	for i, x := range b {
		out[i] = ^x
	}
	return out
}

// halfCloseExchange sends payload on c, half-closes, and checks that the
// answer is want, byte for byte.
func halfCloseExchange(t *testing.T, c net.Conn, payload, want []byte) {
	t.Helper()
	hc, ok := c.(interface{ CloseWrite() error })
	if !ok {
		t.Fatalf("%T has no CloseWrite", c)
	}
	c.SetDeadline(time.Now().Add(10 * time.Second))
	werr := make(chan error, 1)
	go func() {
		_, err := c.Write(payload)
		if err == nil {
			err = hc.CloseWrite()
		}
		werr <- err
	}()
	got, err := io.ReadAll(c)
	if err != nil {
		t.Fatalf("read answer: %v", err)
	}
	if err := <-werr; err != nil {
		t.Fatalf("write: %v", err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("answer of %d bytes differs from the %d expected", len(got), len(want))
	}
}

// openFDs counts this process's open descriptors.
func openFDs(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skipf("no /proc/self/fd: %v", err)
	}
	return len(ents) - 1 // ReadDir's own
}

// waitFDs waits for the descriptor count to come back to want (a closing
// goroutine may lag), then fails.
func waitFDs(t *testing.T, want int) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Second)
	for {
		got := openFDs(t)
		if got <= want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d descriptors open, want %d: a leak", got, want)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
