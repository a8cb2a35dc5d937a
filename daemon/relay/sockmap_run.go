package relay

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"
)

// runPair is splice for a pair: the kernel moves the bytes while Run waits on
// each connection for its EOF or error (a read that normally returns
// nothing else). A FIN on one side becomes a CloseWrite on the other once
// the other has taken every byte forwarded to it; an error (RST) on either,
// or cancelling ctx, resets both; o.IdleTimeout closes both when neither
// received data that long. Run then releases the pair and closes both
// connections.
func runPair(ctx context.Context, p *Pair, o Options) Result {
	var (
		res      = Result{Kernel: true}
		wg       sync.WaitGroup
		mu       sync.Mutex
		firstErr error
		aborted  = make(chan struct{})
	)
	a, b := p.a, p.b
	abort := func(err error) {
		mu.Lock()
		defer mu.Unlock()
		if firstErr != nil || isClosed(aborted) {
			return
		}
		firstErr = err
		close(aborted)
		reset(a)
		reset(b)
	}
	stop := context.AfterFunc(ctx, func() { abort(ctx.Err()) })
	idle := watchIdle(a, b, o.IdleTimeout, abort)
	half := func(src, dst *net.TCPConn, user *int64, redirected func() uint64) {
		defer wg.Done()
		// Normally no read returns data: the verdict takes it all. A read
		// returns data only for a side not enabled (or after Release);
		// user space forwards it then.
		var buf [4096]byte
		for {
			n, err := src.Read(buf[:])
			if n > 0 {
				if _, werr := dst.Write(buf[:n]); werr != nil {
					abort(werr)
					return
				}
				*user += int64(n)
			}
			if err == io.EOF {
				break
			}
			if err != nil {
				abort(err)
				return
			}
		}
		// src sent FIN: wait until dst has queued every byte forwarded to
		// it, then pass the FIN on and keep the other half open.
		if err := waitFlushed(p, dst, func() uint64 { return redirected() + uint64(*user) }, aborted); err != nil {
			abort(err)
			return
		}
		if err := dst.CloseWrite(); err != nil {
			abort(err)
		}
	}
	wg.Add(2)
	go half(a, b, &res.UserAToB, func() uint64 { n, _ := p.Redirected(); return n })
	go half(b, a, &res.UserBToA, func() uint64 { _, n := p.Redirected(); return n })
	wg.Wait()
	stop()
	idle.stop()
	p.Release()
	a.Close()
	b.Close()
	ab, ba := p.Redirected()
	res.AToB = int64(ab) + res.UserAToB
	res.BToA = int64(ba) + res.UserBToA
	mu.Lock()
	res.Err = firstErr
	mu.Unlock()
	return res
}

// errStalled: the kernel did not hand dst the bytes it forwarded, long
// after the FIN (dst's psock failed, or dst is gone).
var errStalled = errors.New("sockmap: forwarded bytes not flushed")

// stallTimeout is how long waitFlushed waits without progress.
var stallTimeout = 2 * time.Minute

// waitFlushed polls until dst has taken want() bytes, with a growing pause:
// the last bytes usually left already (the FIN came after them).
func waitFlushed(p *Pair, dst *net.TCPConn, want func() uint64, aborted <-chan struct{}) error {
	pause := 20 * time.Microsecond
	var last uint64
	lastMove := time.Now()
	for {
		w := want()
		ok, err := p.flushed(dst, w)
		if err != nil {
			return err
		}
		if ok {
			return nil
		}
		// dst may hold back legitimately (its peer reads slowly): give up
		// only when nothing moved for long.
		cur, _ := written(dst)
		if cur != last {
			last, lastMove = cur, time.Now()
		} else if time.Since(lastMove) > stallTimeout {
			return fmt.Errorf("%w: %d of %d bytes", errStalled, cur-p.base(dst), w)
		}
		select {
		case <-aborted:
			return nil
		case <-time.After(pause):
		}
		pause = min(2*pause, 10*time.Millisecond)
	}
}

func isClosed(c <-chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}
