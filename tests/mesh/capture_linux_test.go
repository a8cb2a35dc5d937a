package mesh

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/meshless/meshless/internal/lab"
)

// capture records every frame on the lab's node network (the underlay)
// through an AF_PACKET socket, as tcpdump would.
type capture struct {
	fd   int
	mu   sync.Mutex
	buf  bytes.Buffer
	done chan struct{}
}

// maxCapture bounds what a capture keeps.
const maxCapture = 64 << 20

func startCapture(t *testing.T, l *lab.Lab) *capture {
	t.Helper()
	c := &capture{done: make(chan struct{})}
	err := l.InUnderlay(func() error {
		fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW, int(htons(unix.ETH_P_ALL)))
		c.fd = fd
		return err
	})
	if err != nil {
		t.Fatalf("capture socket: %v", err)
	}
	// A read timeout lets stop end the loop.
	tv := unix.Timeval{Usec: 100000}
	unix.SetsockoptTimeval(c.fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv)
	go c.loop()
	return c
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

func (c *capture) loop() {
	defer close(c.done)
	frame := make([]byte, 1<<16)
	for {
		n, _, err := unix.Recvfrom(c.fd, frame, 0)
		if errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EINTR) {
			select {
			case <-c.done:
				return
			default:
			}
			c.mu.Lock()
			stopped := c.fd < 0
			c.mu.Unlock()
			if stopped {
				return
			}
			continue
		}
		if err != nil {
			return
		}
		c.mu.Lock()
		if c.buf.Len() < maxCapture {
			c.buf.Write(frame[:n])
		}
		c.mu.Unlock()
	}
}

// stop ends the capture and returns what it saw.
func (c *capture) stop() []byte {
	c.mu.Lock()
	fd := c.fd
	c.fd = -1
	c.mu.Unlock()
	<-c.done
	unix.Close(fd)
	return c.buf.Bytes()
}

// testNoClearText sends a marker across nodes through the mesh and,
// for comparison, outside it: the capture of the node network must hold
// the second and never the first.
func (s *meshSuite) testNoClearText(t *testing.T) {
	l := s.l
	cap := startCapture(t, l)
	secret := marker(t)
	clear := marker(t)
	dst := s.podAddr(t, "n2/p1")
	// Through the mesh: the client pod's connection is redirected and
	// tunnelled.
	c, err := dialFrom(l, s.client, dst)
	if err != nil {
		t.Fatal(err)
	}
	sendAll(t, c, secret)
	// Outside the mesh: from n1's node netns, which has no redirection,
	// straight over the pod network.
	n1 := node(t, l, 1)
	err = n1.Do(func() error {
		c, err := net.DialTimeout("tcp4", dst, 5*time.Second)
		if err != nil {
			return err
		}
		sendAll(t, c.(*net.TCPConn), clear)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	frames := cap.stop()
	if !bytes.Contains(frames, clear) {
		t.Fatalf("the capture (%d bytes) misses the unmeshed marker: it does not see the node network", len(frames))
	}
	if bytes.Contains(frames, secret) {
		t.Fatal("a meshed application's bytes crossed the node network in the clear")
	}
}

// marker is 32 random hex bytes, unlikely anywhere else.
func marker(t *testing.T) []byte {
	b := make([]byte, 16)
	rand.Read(b)
	return []byte(hex.EncodeToString(b))
}

// sendAll writes p many times, half-closes, and reads the app's answer,
// so every byte crossed the network before it returns.
func sendAll(t *testing.T, c *net.TCPConn, p []byte) {
	t.Helper()
	defer c.Close()
	c.SetDeadline(time.Now().Add(20 * time.Second))
	for range 64 {
		if _, err := c.Write(p); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	if b, err := io.ReadAll(c); err != nil || len(b) == 0 {
		t.Fatal(fmt.Errorf("answer %q: %w", b, err))
	}
}
