package load

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"
)

// Serve accepts on ln until it fails and serves every connection.
func Serve(ln net.Listener) error {
	for {
		c, err := ln.Accept()
		if err != nil {
			return err
		}
		go handle(c)
	}
}

func handle(c net.Conn) {
	defer c.Close()
	if tc, ok := c.(*net.TCPConn); ok {
		tc.SetNoDelay(true)
	}
	var mode [1]byte
	if _, err := io.ReadFull(c, mode[:]); err != nil {
		return
	}
	switch mode[0] {
	case ModeEcho:
		buf := make([]byte, 64<<10)
		for {
			n, err := c.Read(buf)
			if n > 0 {
				if _, werr := c.Write(buf[:n]); werr != nil {
					return
				}
			}
			if err != nil {
				return
			}
		}
	case ModeSink:
		n, _ := io.Copy(io.Discard, c)
		var b [8]byte
		binary.BigEndian.PutUint64(b[:], uint64(n))
		c.Write(b[:])
	}
}

// LatencyOptions configure Latency.
type LatencyOptions struct {
	// Size is the message size in bytes.
	Size int
	// Rate is the total request rate, spread over Conns; 0 runs closed
	// loop (full speed).
	Rate float64
	// Conns is the number of persistent connections (default 1).
	Conns int
	// Duration is measured time; Warmup runs before it unmeasured.
	Duration, Warmup time.Duration
}

// Latency measures request/response latency over persistent connections,
// each request from its write to the end of its response; at a fixed rate
// requests are sent on a schedule (open loop per connection), at full
// speed back to back.
func Latency(ctx context.Context, d Dialer, o LatencyOptions) (LatencyResult, error) {
	if o.Conns <= 0 {
		o.Conns = 1
	}
	if o.Size <= 0 {
		o.Size = 1
	}
	res := LatencyResult{Rate: o.Rate, Conns: o.Conns, Size: o.Size}
	conns := make([]net.Conn, o.Conns)
	for i := range conns {
		c, err := d.dial(ctx)
		if err != nil {
			for _, c := range conns[:i] {
				c.Close()
			}
			return res, fmt.Errorf("dial: %w", err)
		}
		if _, err := c.Write([]byte{ModeEcho}); err != nil {
			return res, err
		}
		conns[i] = c
	}
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	start := time.Now()
	r := &latencyRun{o: o, start: start, measureFrom: start.Add(o.Warmup)}
	r.end = r.measureFrom.Add(o.Duration)
	var wg sync.WaitGroup
	for i, c := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r.conn(i, c)
		}()
	}
	wg.Wait()
	res.Seconds = seconds(o.Duration)
	res.Errors = r.errs
	res.Achieved = float64(len(r.samples)) / o.Duration.Seconds()
	res.Percentiles = Summarize(r.samples)
	if r.errs > 0 && len(r.samples) == 0 {
		return res, r.firstEr
	}
	return res, nil
}

// latencyRun is one Latency measurement: its schedule, and what its
// connections' goroutines add up.
type latencyRun struct {
	o                       LatencyOptions
	start, measureFrom, end time.Time

	mu      sync.Mutex
	samples []int64
	errs    int
	firstEr error
}

// conn runs connection i of the measurement until end or its first error,
// then adds its samples.
func (r *latencyRun) conn(i int, c net.Conn) {
	o := r.o
	var local []int64
	req := make([]byte, o.Size)
	resp := make([]byte, o.Size)
	var interval time.Duration
	if o.Rate > 0 {
		interval = time.Duration(float64(time.Second) * float64(o.Conns) / o.Rate)
	}
	// Spread the connections' schedules over one interval.
	next := r.start
	if interval > 0 {
		next = r.start.Add(interval * time.Duration(i) / time.Duration(o.Conns))
	}
	c.SetDeadline(r.end.Add(10 * time.Second))
	for {
		var sent time.Time
		if interval > 0 {
			if next.After(r.end) {
				break
			}
			if w := time.Until(next); w > 0 {
				time.Sleep(w)
			}
			// Latency counts from the actual send: the timer's
			// wake-up lag is the client's, not the path's. A
			// stalled path still delays the later sends, which
			// then count from their (late) send.
			sent = time.Now()
			next = next.Add(interval)
			if sent.Sub(next) > interval {
				next = sent // fell behind: do not burst to catch up
			}
		} else {
			sent = time.Now()
			if sent.After(r.end) {
				break
			}
		}
		if _, err := c.Write(req); err != nil {
			r.fail(err)
			break
		}
		if _, err := io.ReadFull(c, resp); err != nil {
			r.fail(err)
			break
		}
		if !sent.Before(r.measureFrom) {
			local = append(local, int64(time.Since(sent)))
		}
	}
	r.mu.Lock()
	r.samples = append(r.samples, local...)
	r.mu.Unlock()
}

// fail counts one connection's error, keeping the first.
func (r *latencyRun) fail(err error) {
	r.mu.Lock()
	r.errs++
	r.firstEr = cmpErr(r.firstEr, err)
	r.mu.Unlock()
}

func cmpErr(old, err error) error {
	if old != nil {
		return old
	}
	return err
}

// ConnOptions configure Conns.
type ConnOptions struct {
	// Duration bounds the run; Count, when positive, stops it after that
	// many connections instead.
	Duration time.Duration
	Count    int
	// Concurrency is the number of connections in flight (default 1).
	Concurrency int
}

// Conns measures new connections: connect, send 1 byte, read it back,
// close. Each connection's latency is from the start of connect to the
// response: with a mesh in the way, connect() may return before the
// destination is reached, so the first round trip is part of the cost.
func Conns(ctx context.Context, d Dialer, o ConnOptions) (ConnResult, error) {
	if o.Concurrency <= 0 {
		o.Concurrency = 1
	}
	var (
		mu      sync.Mutex
		samples []int64
		errs    int
		firstEr error
		wg      sync.WaitGroup
		issued  int
	)
	start := time.Now()
	end := start.Add(o.Duration)
	take := func() bool {
		mu.Lock()
		defer mu.Unlock()
		if o.Count > 0 {
			if issued >= o.Count {
				return false
			}
		} else if time.Now().After(end) {
			return false
		}
		issued++
		return true
	}
	for range o.Concurrency {
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, 2)
			for take() {
				t0 := time.Now()
				err := func() error {
					c, err := d.dial(ctx)
					if err != nil {
						return err
					}
					defer c.Close()
					c.SetDeadline(time.Now().Add(15 * time.Second))
					if _, err := c.Write([]byte{ModeEcho, 'x'}); err != nil {
						return err
					}
					_, err = io.ReadFull(c, buf[:1])
					return err
				}()
				lat := time.Since(t0)
				mu.Lock()
				if err != nil {
					errs++
					firstEr = cmpErr(firstEr, err)
				} else {
					samples = append(samples, int64(lat))
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	el := time.Since(start)
	res := ConnResult{Count: len(samples), Errors: errs, Seconds: seconds(el)}
	res.Rate = float64(len(samples)) / el.Seconds()
	res.Percentiles = Summarize(samples)
	if len(samples) == 0 && firstEr != nil {
		return res, firstEr
	}
	return res, nil
}

// Bulk sends as fast as it can on one connection for d, then half-closes
// and waits for the server's count: one direction, one stream.
func Bulk(ctx context.Context, dl Dialer, d time.Duration) (BulkResult, error) {
	c, err := dl.dial(ctx)
	if err != nil {
		return BulkResult{}, err
	}
	defer c.Close()
	buf := make([]byte, 128<<10)
	buf[0] = ModeSink
	start := time.Now()
	end := start.Add(d)
	c.SetDeadline(end.Add(30 * time.Second))
	if _, err := c.Write(buf[:1]); err != nil {
		return BulkResult{}, err
	}
	for time.Now().Before(end) {
		if _, err := c.Write(buf); err != nil {
			return BulkResult{}, err
		}
	}
	cw, ok := c.(interface{ CloseWrite() error })
	if !ok {
		return BulkResult{}, errors.New("connection cannot half-close")
	}
	if err := cw.CloseWrite(); err != nil {
		return BulkResult{}, err
	}
	var b [8]byte
	if _, err := io.ReadFull(c, b[:]); err != nil {
		return BulkResult{}, fmt.Errorf("read count: %w", err)
	}
	el := time.Since(start)
	n := int64(binary.BigEndian.Uint64(b[:]))
	return BulkResult{Bytes: n, Seconds: seconds(el), Gbps: float64(n) * 8 / el.Seconds() / 1e9}, nil
}
