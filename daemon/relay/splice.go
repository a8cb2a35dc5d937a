package relay

import (
	"context"
	"io"
	"net"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// splice copies a to b and b to a in user space (io.Copy, which the
// runtime turns into splice(2) between sockets) until both directions end,
// then closes both connections. Cancelling ctx resets both.
func splice(ctx context.Context, a, b Conn, o Options) Result {
	var (
		res      Result
		wg       sync.WaitGroup
		mu       sync.Mutex
		firstErr error
		aborted  bool
	)
	abort := func(err error) {
		mu.Lock()
		if aborted {
			mu.Unlock()
			return
		}
		aborted, firstErr = true, err
		mu.Unlock()
		reset(a)
		reset(b)
	}
	stop := context.AfterFunc(ctx, func() { abort(ctx.Err()) })
	w := watchIdle(a, b, o.IdleTimeout, abort)
	copyHalf := func(dst, src Conn, n *int64) {
		defer wg.Done()
		var err error
		*n, err = io.Copy(dst, src)
		if err != nil {
			abort(err)
			return
		}
		// src sent FIN: pass it on and keep the other half open, so the
		// peer can still answer (HTTP/1.0-style request, then response).
		if err := dst.CloseWrite(); err != nil {
			abort(err)
		}
	}
	wg.Add(2)
	go copyHalf(b, a, &res.AToB)
	go copyHalf(a, b, &res.BToA)
	wg.Wait()
	stop()
	w.stop()
	a.Close()
	b.Close()
	mu.Lock()
	res.Err = firstErr
	mu.Unlock()
	return res
}

// reset closes c with SO_LINGER 0 when it is TCP, which sends RST instead
// of FIN: the peer learns the connection failed rather than ended. A unix
// peer sees ECONNRESET on its next read when unread data was discarded,
// EOF otherwise; unix sockets have nothing closer to an RST.
func reset(c Conn) {
	if tc, ok := c.(*net.TCPConn); ok {
		tc.SetLinger(0)
	}
	c.Close()
}

// idleWatch checks the kernel's time since the last data received on each
// connection, so no per-read work is needed on the splice path.
type idleWatch struct {
	a, b    Conn
	timeout time.Duration
	abort   func(error)

	mu      sync.Mutex
	timer   *time.Timer
	stopped bool
}

// watchIdle calls abort(ErrIdle) once neither a nor b received data for
// timeout; nil (which stop accepts) when timeout is not positive.
func watchIdle(a, b Conn, timeout time.Duration, abort func(error)) *idleWatch {
	if timeout <= 0 {
		return nil
	}
	w := &idleWatch{a: a, b: b, timeout: timeout, abort: abort}
	w.mu.Lock()
	w.timer = time.AfterFunc(timeout, w.check)
	w.mu.Unlock()
	return w
}

func (w *idleWatch) check() {
	idle, ok := sinceLastRecv(w.a)
	if ib, okb := sinceLastRecv(w.b); okb && (!ok || ib < idle) {
		idle, ok = ib, true
	}
	if !ok {
		idle = 0 // no TCP side: cannot judge, treat as active
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.stopped {
		return
	}
	if idle >= w.timeout {
		w.stopped = true
		go w.abort(ErrIdle)
		return
	}
	w.timer.Reset(w.timeout - idle)
}

func (w *idleWatch) stop() {
	if w == nil {
		return
	}
	w.mu.Lock()
	w.stopped = true
	w.timer.Stop()
	w.mu.Unlock()
}

// sinceLastRecv returns how long ago c last received data, and false when
// c is not TCP. On error (the socket is closed already) it returns 0,
// treating c as active: the copy loops notice a closed socket themselves.
func sinceLastRecv(c Conn) (time.Duration, bool) {
	var nc net.Conn = c
	// A TLS connection (the tunnel) is judged by the TCP connection it
	// runs on: a record received is data received.
	if w, ok := c.(interface{ NetConn() net.Conn }); ok {
		nc = w.NetConn()
	}
	tc, ok := nc.(*net.TCPConn)
	if !ok {
		return 0, false
	}
	rc, err := tc.SyscallConn()
	if err != nil {
		return 0, true
	}
	var d time.Duration
	rc.Control(func(fd uintptr) {
		ti, err := unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO)
		if err == nil {
			d = time.Duration(ti.Last_data_recv) * time.Millisecond
		}
	})
	return d, true
}
