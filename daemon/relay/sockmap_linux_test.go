package relay

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/meshless/meshless/daemon/podnet"
	"github.com/meshless/meshless/internal/nstest"
	"github.com/meshless/meshless/internal/podtest"
	"github.com/meshless/meshless/internal/testenv"
)

// loadMap loads the program; it needs root (BPF).
func loadMap(t testing.TB) *Sockmap {
	t.Helper()
	nstest.RequireRoot(t)
	stallTimeout = 3 * time.Second
	m, err := LoadSockmap()
	if err != nil {
		t.Fatalf("load: %v", err)
	}
	t.Cleanup(func() { m.Close() })
	return m
}

// waitQueued waits until c has n bytes in its receive queue.
func waitQueued(t *testing.T, c *net.TCPConn, n int) {
	t.Helper()
	testenv.Eventually(t, 5*time.Second, func() error {
		var q int
		control(c, func(fd int) error {
			var err error
			q, err = unix.IoctlGetInt(fd, unix.SIOCINQ)
			return err
		})
		if q < n {
			return fmt.Errorf("%d of %d bytes queued", q, n)
		}
		return nil
	})
}

// tcpCloseWait is TCP_CLOSE_WAIT of the kernel's tcp_states.
const tcpCloseWait = 8

// tcpState returns c's TCP state (TCP_INFO), 0 when unknown.
func tcpState(c *net.TCPConn) uint8 {
	var st uint8
	control(c, func(fd int) error {
		ti, err := unix.GetsockoptTCPInfo(fd, unix.IPPROTO_TCP, unix.TCP_INFO)
		if err == nil {
			st = ti.State
		}
		return err
	})
	return st
}

// conns is one forwarded connection: client ↔ a (daemon, accepted) and
// b (daemon, dialled) ↔ server.
type conns struct {
	client, a, b, server *net.TCPConn
}

// dialer dials the server's listener as the daemon would.
type dialer func(addr string) (*net.TCPConn, error)

func hostDial(addr string) (*net.TCPConn, error) {
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return nil, err
	}
	return c.(*net.TCPConn), nil
}

// newConns sets up the four sockets; srvLn is the server's listener, in
// whatever netns, dial reaches it.
func newConns(t testing.TB, srvLn *net.TCPListener, dial dialer) conns {
	t.Helper()
	ln, err := net.ListenTCP("tcp", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	var c conns
	if c.client, err = net.DialTCP("tcp", nil, ln.Addr().(*net.TCPAddr)); err != nil {
		t.Fatal(err)
	}
	if c.a, err = ln.AcceptTCP(); err != nil {
		t.Fatal(err)
	}
	if c.b, err = dial(srvLn.Addr().String()); err != nil {
		t.Fatal(err)
	}
	if c.server, err = srvLn.AcceptTCP(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.client.Close(); c.server.Close(); c.a.Close(); c.b.Close() })
	return c
}

func listen(t testing.TB) *net.TCPListener {
	t.Helper()
	ln, err := net.ListenTCP("tcp", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln
}

// start pairs c.a and c.b and runs the pair; the result arrives on the
// returned channel.
func start(t testing.TB, m *Sockmap, c conns, o Options) <-chan Result {
	t.Helper()
	p, err := m.Pair(c.a, c.b)
	if err != nil {
		t.Fatalf("pair: %v", err)
	}
	if !p.aEnabled || !p.bEnabled {
		t.Fatalf("pair not enabled both ways: %v %v", p.aEnabled, p.bEnabled)
	}
	done := make(chan Result, 1)
	go func() { done <- runPair(context.Background(), p, o) }()
	return done
}

func waitPair(t testing.TB, done <-chan Result) Result {
	t.Helper()
	select {
	case r := <-done:
		return r
	case <-time.After(30 * time.Second):
		t.Fatal("pair did not end")
		return Result{}
	}
}

// send writes n pseudo-random bytes (seeded) to w, then CloseWrite, and
// returns their hash.
func send(w *net.TCPConn, n int, seed uint64) ([32]byte, error) {
	h := sha256.New()
	r := rand.New(rand.NewPCG(seed, seed))
	buf := make([]byte, 64<<10)
	for left := n; left > 0; {
		k := min(left, len(buf))
		for i := 0; i < k; i += 8 {
			v := r.Uint64()
			for j := 0; j < 8 && i+j < k; j++ {
				buf[i+j] = byte(v >> (8 * j))
			}
		}
		h.Write(buf[:k])
		if _, err := w.Write(buf[:k]); err != nil {
			return [32]byte{}, err
		}
		left -= k
	}
	var s [32]byte
	copy(s[:], h.Sum(nil))
	return s, w.CloseWrite()
}

// recv reads r to EOF and returns the byte count and hash.
func recv(r io.Reader) (int64, [32]byte, error) {
	h := sha256.New()
	n, err := io.Copy(h, r)
	var s [32]byte
	copy(s[:], h.Sum(nil))
	return n, s, err
}

// transfer sends n bytes each way at once and checks they arrive intact.
func transfer(t testing.TB, c conns, n int) {
	t.Helper()
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	check := func(name string, from, to *net.TCPConn, seed uint64) {
		var sent [32]byte
		var serr error
		wg.Add(1)
		go func() { defer wg.Done(); sent, serr = send(from, n, seed) }()
		got, sum, err := recv(to)
		wg.Wait()
		switch {
		case serr != nil:
			errs <- fmt.Errorf("%s: send: %w", name, serr)
		case err != nil:
			errs <- fmt.Errorf("%s: recv: %w", name, err)
		case got != int64(n) || sum != sent:
			errs <- fmt.Errorf("%s: got %d bytes (want %d), hash match %v", name, got, n, sum == sent)
		}
	}
	var all sync.WaitGroup
	all.Add(2)
	go func() { defer all.Done(); check("client→server", c.client, c.server, 1) }()
	go func() { defer all.Done(); check("server→client", c.server, c.client, 2) }()
	all.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// 100 MB each way at once, byte-exact, and no byte through user space.
func TestSockmapTransfer100MB(t *testing.T) {
	m := loadMap(t)
	c := newConns(t, listen(t), hostDial)
	done := start(t, m, c, Options{})
	const n = 100 << 20
	transfer(t, c, n)
	c.client.Close()
	c.server.Close()
	r := waitPair(t, done)
	if r.Err != nil {
		t.Errorf("pair ended with %v", r.Err)
	}
	if r.AToB != n || r.BToA != n {
		t.Errorf("counted %d / %d bytes, want %d each", r.AToB, r.BToA, n)
	}
	if r.UserAToB != 0 || r.UserBToA != 0 {
		t.Errorf("user space copied %d / %d bytes, want none", r.UserAToB, r.UserBToA)
	}
}

// Bytes received before the pairing (the request sent right after
// connect, a server's greeting) are forwarded without any further byte
// arriving, and in order before the later ones.
func TestSockmapDataBeforePair(t *testing.T) {
	m := loadMap(t)
	c := newConns(t, listen(t), hostDial)
	if _, err := c.client.Write([]byte("request;")); err != nil {
		t.Fatal(err)
	}
	if _, err := c.server.Write([]byte("greeting;")); err != nil {
		t.Fatal(err)
	}
	// Both are in the daemon's receive queues before the pairing.
	waitQueued(t, c.a, len("request;"))
	waitQueued(t, c.b, len("greeting;"))
	done := start(t, m, c, Options{})
	expect := func(r *net.TCPConn, want string) {
		t.Helper()
		r.SetReadDeadline(time.Now().Add(5 * time.Second))
		got := make([]byte, len(want))
		if _, err := io.ReadFull(r, got); err != nil || string(got) != want {
			t.Fatalf("read %q, %v; want %q", got, err, want)
		}
	}
	expect(c.server, "request;")
	expect(c.client, "greeting;")
	c.client.Write([]byte("more"))
	expect(c.server, "more")
	c.client.Close()
	c.server.Close()
	r := waitPair(t, done)
	if r.UserAToB != 0 || r.UserBToA != 0 {
		t.Errorf("user space copied %d / %d bytes, want none", r.UserAToB, r.UserBToA)
	}
	if r.AToB != 12 || r.BToA != 9 {
		t.Errorf("counted %d / %d bytes, want 12 / 9", r.AToB, r.BToA)
	}
}

// The client half-closes after its request; the server still answers and
// the client reads the answer, then EOF. The FIN never overtakes data.
func TestSockmapHalfClose(t *testing.T) {
	m := loadMap(t)
	for i := range 20 {
		c := newConns(t, listen(t), hostDial)
		done := start(t, m, c, Options{})
		req := bytes.Repeat([]byte{'q'}, 1+i*50000)
		if _, err := c.client.Write(req); err != nil {
			t.Fatal(err)
		}
		c.client.CloseWrite()
		c.server.SetReadDeadline(time.Now().Add(10 * time.Second))
		got, err := io.ReadAll(c.server)
		if err != nil || !bytes.Equal(got, req) {
			t.Fatalf("server read %d bytes, %v; want %d then EOF", len(got), err, len(req))
		}
		if _, err := c.server.Write([]byte("answer")); err != nil {
			t.Fatal(err)
		}
		c.server.Close()
		c.client.SetReadDeadline(time.Now().Add(10 * time.Second))
		got, err = io.ReadAll(c.client)
		if err != nil || string(got) != "answer" {
			t.Fatalf("client read %q, %v; want answer then EOF", got, err)
		}
		if r := waitPair(t, done); r.Err != nil || r.UserAToB+r.UserBToA != 0 {
			t.Errorf("pair: %+v", r)
		}
	}
}

// An RST on one side resets the other rather than closing it cleanly.
func TestSockmapResetPropagates(t *testing.T) {
	m := loadMap(t)
	for _, side := range []string{"server", "client"} {
		t.Run(side, func(t *testing.T) {
			c := newConns(t, listen(t), hostDial)
			done := start(t, m, c, Options{})
			rst, other := c.server, c.client
			if side == "client" {
				rst, other = c.client, c.server
			}
			rst.Write([]byte("x"))
			buf := make([]byte, 1)
			other.SetReadDeadline(time.Now().Add(5 * time.Second))
			if _, err := io.ReadFull(other, buf); err != nil {
				t.Fatal(err)
			}
			rst.SetLinger(0)
			rst.Close()
			_, err := other.Read(buf)
			if !errors.Is(err, syscall.ECONNRESET) {
				t.Errorf("%s read %v after the %s's RST, want ECONNRESET", side, err, side)
			}
			if r := waitPair(t, done); r.Err == nil {
				t.Error("pair ended without error")
			}
		})
	}
}

// Many pairs at once, each echoing its own data.
func TestSockmapManyPairs(t *testing.T) {
	m := loadMap(t)
	srv := listen(t)
	const pairs, size = 200, 256 << 10
	cs := make([]conns, pairs)
	dones := make([]<-chan Result, pairs)
	for i := range cs {
		cs[i] = newConns(t, srv, hostDial)
		dones[i] = start(t, m, cs[i], Options{})
		go func(s *net.TCPConn) { io.Copy(s, s); s.CloseWrite() }(cs[i].server)
	}
	var wg sync.WaitGroup
	for i := range cs {
		wg.Add(1)
		go func(c conns) {
			defer wg.Done()
			var sent [32]byte
			go func() { sent, _ = send(c.client, size, uint64(i)) }()
			n, sum, err := recv(c.client)
			if err != nil || n != size || sum != sent {
				t.Errorf("pair %d: echoed %d bytes, %v, hash match %v", i, n, err, sum == sent)
			}
		}(cs[i])
	}
	wg.Wait()
	for i := range cs {
		cs[i].client.Close()
		cs[i].server.Close()
		if r := waitPair(t, dones[i]); r.Err != nil || r.AToB != size || r.BToA != size || r.UserAToB+r.UserBToA != 0 {
			t.Errorf("pair %d: %+v", i, r)
		}
	}
	// Every entry is gone.
	var k, v uint64
	if err := m.bytes.NextKey(nil, &k); err == nil {
		t.Errorf("byte counter of cookie %d left", k)
	}
	_ = v
}

// The daemon's socket to the server lives in the server pod's netns, as
// for a same-node delivery.
func TestSockmapPeerInOtherNetns(t *testing.T) {
	m := loadMap(t)
	pod := podtest.NewPod(t, "198.19.77.2/24")
	srv := podtest.Listen(t, pod, "tcp4", "198.19.77.2:8080")
	pns, err := podnet.Open(pod.Path())
	if err != nil {
		t.Fatal(err)
	}
	defer pns.Close()
	c := newConns(t, srv, func(addr string) (*net.TCPConn, error) {
		return pns.Dial(context.Background(), "tcp4", addr, podnet.DialOptions{})
	})
	done := start(t, m, c, Options{})
	transfer(t, c, 8<<20)
	c.client.Close()
	c.server.Close()
	if r := waitPair(t, done); r.Err != nil || r.AToB != 8<<20 || r.UserAToB+r.UserBToA != 0 {
		t.Errorf("pair: %+v", r)
	}
}

// Known limit, measured not asserted: with egress redirect the kernel
// takes skbs off the receiving socket at once (their memory no longer
// counts against its receive buffer, so its window stays open) and queues
// them on the peer's psock without bound. A server that stops reading does
// not hold the client back the way the user-space pump does.
func TestBuffering(t *testing.T) {
	m := loadMap(t)
	for _, tt := range []struct {
		engine string
		o      Options
	}{{"splice", Options{}}, {"sockmap", Options{Sockmap: m}}} {
		t.Run(tt.engine, func(t *testing.T) {
			// The most the kernel lets two TCP connections hold: two
			// send and two receive buffers at their autotuning maxima, and
			// the relay's pipe (1 MiB at most). The client offers more.
			bound := 2*(sysctlMax(t, "net/ipv4/tcp_wmem")+sysctlMax(t, "net/ipv4/tcp_rmem")) + 1<<20
			limit := bound + 16<<20
			w := buffered(t, tt.o, limit)
			t.Logf("%s: %d KiB accepted while the server did not read", tt.engine, w>>10)
			// Splice: the socket buffers and one pipe on the way, a few
			// MiB each with autotuning. Sockmap: ingress redirect charges
			// the receiver without checking its buffer (cilium #6431), so
			// the sender is stopped by nothing but global TCP memory
			// pressure. The second case states the hazard that keeps
			// --sockmap off by default; when it fails, the kernel or the
			// engine gained backpressure.
			if tt.o.Sockmap == nil && w > bound {
				t.Errorf("splice buffered %d MiB for a server that does not read, want at most %d MiB", w>>20, bound>>20)
			}
			if tt.o.Sockmap != nil && w < limit {
				t.Errorf("sockmap buffered only %d MiB: backpressure now works, revisit --sockmap's default", w>>20)
			}
		})
	}
}

// sysctlMax returns the last field of a tcp_rmem-style sysctl.
func sysctlMax(t *testing.T, key string) int64 {
	b, err := os.ReadFile("/proc/sys/" + key)
	if err != nil {
		t.Fatal(err)
	}
	f := strings.Fields(string(b))
	n, err := strconv.ParseInt(f[len(f)-1], 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// buffered writes up to limit bytes towards a server that never reads,
// through the engine of o, and returns how much was accepted once the
// writes stopped making progress.
func buffered(t *testing.T, o Options, limit int64) int64 {
	m := o.Sockmap
	c := newConns(t, listen(t), hostDial)
	var done <-chan Result
	if m != nil {
		done = start(t, m, c, o)
	} else {
		ch := make(chan Result, 1)
		go func() { ch <- splice(context.Background(), c.a, c.b, o) }()
		done = ch
	}
	var written atomic.Int64
	go func() {
		buf := make([]byte, 64<<10)
		for written.Load() < limit {
			n, err := c.client.Write(buf)
			written.Add(int64(n))
			if err != nil {
				return
			}
		}
	}()
	// Progress stops when every buffer on the way is full: two samples a
	// while apart agree (or everything was written).
	last := int64(-1)
	testenv.Eventually(t, 30*time.Second, func() error {
		w := written.Load()
		if w == last || w >= limit {
			return nil
		}
		last = w
		time.Sleep(200 * time.Millisecond) // the sampling interval
		return errors.New("still writing")
	})
	c.client.SetLinger(0)
	c.client.Close()
	c.server.Close()
	waitPair(t, done)
	return written.Load()
}

// The idle timeout closes a pair nobody sends on.
func TestSockmapIdle(t *testing.T) {
	m := loadMap(t)
	c := newConns(t, listen(t), hostDial)
	done := start(t, m, c, Options{IdleTimeout: 300 * time.Millisecond})
	c.client.Write([]byte("x"))
	if r := waitPair(t, done); !errors.Is(r.Err, ErrIdle) {
		t.Errorf("pair ended with %v, want idle", r.Err)
	}
}

// Cancelling the context resets both.
func TestSockmapCancel(t *testing.T) {
	m := loadMap(t)
	c := newConns(t, listen(t), hostDial)
	p, err := m.Pair(c.a, c.b)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan Result, 1)
	go func() { done <- runPair(ctx, p, Options{}) }()
	cancel()
	if r := waitPair(t, done); !errors.Is(r.Err, context.Canceled) {
		t.Errorf("pair ended with %v", r.Err)
	}
	c.client.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.client.Read(make([]byte, 1)); !errors.Is(err, syscall.ECONNRESET) {
		t.Errorf("client read %v, want ECONNRESET", err)
	}
}

// A connection that already got its peer's FIN cannot be paired: Pair
// fails and leaves nothing behind (the caller pumps instead).
func TestPairClosedFails(t *testing.T) {
	m := loadMap(t)
	c := newConns(t, listen(t), hostDial)
	c.client.Write([]byte("x"))
	c.client.CloseWrite()
	testenv.Eventually(t, 5*time.Second, func() error {
		if st := tcpState(c.a); st != tcpCloseWait {
			return fmt.Errorf("daemon side in state %d, want CLOSE_WAIT", st)
		}
		return nil
	})
	if _, err := m.Pair(c.a, c.b); err == nil {
		t.Fatal("paired a connection in CLOSE_WAIT")
	}
	var k uint64
	if err := m.bytes.NextKey(nil, &k); err == nil {
		t.Error("entries left after a failed Pair")
	}
	// Still usable in user space.
	res := make(chan Result, 1)
	go func() { res <- splice(context.Background(), c.a, c.b, Options{}) }()
	got, err := io.ReadAll(c.server)
	if err != nil || string(got) != "x" {
		t.Errorf("server read %q, %v", got, err)
	}
	c.server.Close()
	<-res
}
