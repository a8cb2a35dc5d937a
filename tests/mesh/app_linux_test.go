package mesh

import (
	"crypto/sha256"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meshless/meshless/tests/harness"

	"github.com/meshless/meshless/internal/lab"
)

// app is a test application: each connection is read to EOF, then
// answered with "<peer IP> <bytes> <sha256 hex>" and closed. It counts
// accepted connections and bytes received.
type app struct {
	conns, bytes atomic.Int64
	peers        chan string
}

func serveApp(t *testing.T, ln net.Listener) *app {
	a := &app{peers: make(chan string, 1024)}
	var wg sync.WaitGroup
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			a.conns.Add(1)
			wg.Go(func() {
				defer c.Close()
				h := sha256.New()
				n, _ := io.Copy(h, c)
				a.bytes.Add(n)
				peer := "unix"
				if ta, ok := c.RemoteAddr().(*net.TCPAddr); ok {
					peer = ta.IP.String()
				}
				select {
				case a.peers <- peer:
				default:
				}
				fmt.Fprintf(c, "%s %d %x", peer, n, h.Sum(nil))
			})
		}
	})
	return a
}

// listenPod starts an app on the pod's address and port, inside its netns.
func listenPod(t *testing.T, l *lab.Lab, ref string, port int) *app {
	t.Helper()
	p := harness.LabPod(t, l, ref)
	var ln net.Listener
	err := l.InPod(ref, func() error {
		var err error
		ln, err = net.Listen("tcp4", addr(p.IP, port))
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return serveApp(t, ln)
}

// listenUnix starts an app on the pod's Meshless unix socket for name:
// /meshlet/server/<name> in the pod, <the pod's MeshletDir>/server/<name>
// on the host.
func listenUnix(t *testing.T, l *lab.Lab, ref, name string) *app {
	t.Helper()
	dir := harness.LabPod(t, l, ref).MeshletDir
	// The daemon made the pod's server folder when the pod registered.
	ln, err := net.Listen("unix", filepath.Join(dir, "server", name))
	if err != nil {
		t.Fatal(err)
	}
	return serveApp(t, ln)
}

// stream is a reproducible pseudo-random byte stream.
func stream(seed uint64) io.Reader {
	return rand.NewChaCha8([32]byte{byte(seed), byte(seed >> 8)})
}

// exchange connects from ref to dst, sends size bytes of stream(seed),
// half-closes, reads the answer and returns it with the expected answer
// for a server that sees peer.
func exchange(t *testing.T, l *lab.Lab, ref, dst string, size int64, seed uint64) (got, want string, err error) {
	t.Helper()
	c, err := dialFrom(l, ref, dst)
	if err != nil {
		return "", "", err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(2 * time.Minute))
	h := sha256.New()
	werr := make(chan error, 1)
	go func() {
		_, err := io.CopyN(io.MultiWriter(c, h), stream(seed), size)
		if err == nil {
			err = c.CloseWrite()
		}
		werr <- err
	}()
	b, rerr := io.ReadAll(c)
	if err := <-werr; err != nil {
		return "", "", fmt.Errorf("send: %w", err)
	}
	if rerr != nil {
		return "", "", fmt.Errorf("read answer: %w", rerr)
	}
	return string(b), fmt.Sprintf("%d %x", size, h.Sum(nil)), nil
}

// check runs exchange and requires the server to have seen peer and every
// byte.
func check(t *testing.T, l *lab.Lab, ref, dst, peer string, size int64) {
	t.Helper()
	got, want, err := exchange(t, l, ref, dst, size, uint64(size))
	if err != nil {
		t.Fatalf("%s -> %s: %v", ref, dst, err)
	}
	if got != peer+" "+want {
		t.Fatalf("%s -> %s: answer %q, want %q", ref, dst, got, peer+" "+want)
	}
}
