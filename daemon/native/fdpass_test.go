package native

import (
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// pair returns the two ends of a stream socketpair, closed with the test.
func pair(t *testing.T) (*net.UnixConn, *net.UnixConn) {
	t.Helper()
	a, b, err := socketPair(syscall.SOCK_STREAM)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close(); b.Close() })
	return a, b
}

func TestSendReceiveConn(t *testing.T) {
	base := openFDs(t)
	daemon, client := pair(t)
	server, handed := pair(t)
	if err := SendConn(daemon, handed); err != nil {
		t.Fatal(err)
	}
	// The daemon's copy goes at once; the descriptor in flight lives on.
	handed.Close()
	conn, err := ReceiveConn(client)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := conn.(*net.UnixConn); !ok {
		t.Fatalf("ReceiveConn returned a %T", conn)
	}
	go answerServer(server)
	halfCloseExchange(t, conn, []byte("hello"), invert([]byte("hello")))
	conn.Close()
	daemon.Close()
	client.Close()
	server.Close()
	waitFDs(t, base)
}

func TestSendConnFile(t *testing.T) {
	// An *os.File works as well as a conn: the daemon may hold either.
	daemon, client := pair(t)
	server, handed := pair(t)
	f, err := handed.File()
	if err != nil {
		t.Fatal(err)
	}
	handed.Close()
	if err := SendConn(daemon, f); err != nil {
		t.Fatal(err)
	}
	f.Close()
	conn, err := ReceiveConn(client)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	go answerServer(server)
	halfCloseExchange(t, conn, []byte("file"), invert([]byte("file")))
}

func TestReceivedDescriptorIsCloseOnExec(t *testing.T) {
	daemon, client := pair(t)
	_, handed := pair(t)
	if err := SendConn(daemon, handed); err != nil {
		t.Fatal(err)
	}
	fd, err := receiveFD(client)
	if err != nil {
		t.Fatal(err)
	}
	defer syscall.Close(fd)
	flags, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0)
	if err != nil || flags&unix.FD_CLOEXEC == 0 {
		t.Fatalf("received descriptor flags %#x, %v: not close-on-exec", flags, err)
	}
}

// sendRaw sends data with the given descriptors as SCM_RIGHTS.
func sendRaw(t *testing.T, c *net.UnixConn, data []byte, fds ...int) {
	t.Helper()
	var oob []byte
	if len(fds) > 0 {
		oob = syscall.UnixRights(fds...)
	}
	if _, _, err := c.WriteMsgUnix(data, oob, nil); err != nil {
		t.Fatal(err)
	}
}

func TestReceiveConnErrors(t *testing.T) {
	devnull, err := os.Open(os.DevNull)
	if err != nil {
		t.Fatal(err)
	}
	defer devnull.Close()
	null := int(devnull.Fd())
	many := make([]int, maxRecvFDs+8)
	for i := range many {
		many[i] = null
	}
	tests := []struct {
		name string
		send func(t *testing.T, c *net.UnixConn)
		want string
	}{
		{"no descriptor", func(t *testing.T, c *net.UnixConn) { sendRaw(t, c, []byte{HandoffMarker}) }, "0 descriptors"},
		{"two descriptors", func(t *testing.T, c *net.UnixConn) { sendRaw(t, c, []byte{HandoffMarker}, null, null) }, "2 descriptors"},
		{"truncated", func(t *testing.T, c *net.UnixConn) { sendRaw(t, c, []byte{HandoffMarker}, many...) }, "MSG_CTRUNC"},
		{"wrong marker", func(t *testing.T, c *net.UnixConn) { sendRaw(t, c, []byte{'X'}, null) }, "marker 0x58"},
		{"not a socket", func(t *testing.T, c *net.UnixConn) { sendRaw(t, c, []byte{HandoffMarker}, null) }, "not a socket"},
		{"datagram socket", func(t *testing.T, c *net.UnixConn) {
			a, b, err := socketPair(syscall.SOCK_DGRAM)
			if err != nil {
				t.Fatal(err)
			}
			defer a.Close()
			defer b.Close()
			if err := SendConn(c, a); err != nil {
				t.Fatal(err)
			}
		}, "not a stream"},
		{"listening socket", func(t *testing.T, c *net.UnixConn) {
			ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: filepath.Join(t.TempDir(), "l"), Net: "unix"})
			if err != nil {
				t.Fatal(err)
			}
			defer ln.Close()
			if err := SendConn(c, ln); err != nil {
				t.Fatal(err)
			}
		}, "a listening socket"},
		{"closed before the marker", func(t *testing.T, c *net.UnixConn) { c.CloseWrite() }, "closed before the marker"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			daemon, client := pair(t)
			base := openFDs(t)
			tt.send(t, daemon)
			conn, err := ReceiveConn(client)
			if err == nil {
				conn.Close()
				t.Fatal("ReceiveConn succeeded")
			}
			if !errors.Is(err, ErrHandoff) || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %v: want ErrHandoff and %q", err, tt.want)
			}
			// Whatever arrived was closed: none of it lingers.
			waitFDs(t, base)
		})
	}
}

func TestReceiveConnTimeout(t *testing.T) {
	_, client := pair(t)
	client.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
	if _, err := ReceiveConn(client); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("ReceiveConn = %v, want a deadline error", err)
	}
}

func TestReceiveConnTCP(t *testing.T) {
	// A TCP connection can be handed over too (a later daemon might pass
	// one it made inside the server's network namespace).
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err == nil {
			answerServer(c)
		}
	}()
	tc, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	daemon, client := pair(t)
	if err := SendConn(daemon, tc.(*net.TCPConn)); err != nil {
		t.Fatal(err)
	}
	tc.Close()
	conn, err := ReceiveConn(client)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, ok := conn.(*net.TCPConn); !ok {
		t.Fatalf("got a %T", conn)
	}
	halfCloseExchange(t, conn, []byte("tcp"), invert([]byte("tcp")))
	if _, err := io.ReadAll(conn); err != nil {
		t.Fatal(err)
	}
}
