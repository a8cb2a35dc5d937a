package race

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// server is a loopback listener that records, for every connection it
// accepts, the bytes it received until the peer closed.
type server struct {
	ln   net.Listener
	addr string
	got  chan string
}

func newServer(t *testing.T) *server {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &server{ln: ln, addr: ln.Addr().String(), got: make(chan string, 16)}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				c.SetReadDeadline(time.Now().Add(20 * time.Second))
				b, err := io.ReadAll(c)
				if err != nil {
					s.got <- "error: " + err.Error()
					return
				}
				s.got <- string(b)
			}()
		}
	}()
	return s
}

func tcpDial(ctx context.Context, addr string) (*net.TCPConn, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	return c.(*net.TCPConn), nil
}

type event struct {
	name   string
	result Result
	err    error
}

// reports collects Report calls.
type reports struct{ ch chan event }

func newReports() *reports { return &reports{ch: make(chan event, 64)} }

func (r *reports) report(c string, res Result, err error) { r.ch <- event{c, res, err} }

// wait returns the next n events keyed by candidate name.
func (r *reports) wait(t *testing.T, n int) map[string]event {
	t.Helper()
	m := map[string]event{}
	for range n {
		select {
		case e := <-r.ch:
			m[e.name] = e
		case <-time.After(10 * time.Second):
			t.Fatalf("only %d of %d reports: %v", len(m), n, m)
		}
	}
	return m
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// TestFastBeatsSlow: a candidate that never answers does not delay the
// race, and its dial is cancelled.
func TestFastBeatsSlow(t *testing.T) {
	srv := newServer(t)
	rep := newReports()
	dial := func(ctx context.Context, c string) (*net.TCPConn, error) {
		if strings.HasPrefix(c, "slow") {
			<-ctx.Done()
			return nil, ctx.Err()
		}
		return tcpDial(ctx, srv.addr)
	}
	start := time.Now()
	conn, won, err := Dial(ctxT(t), []string{"slow", "fast", "slow2"}, dial, Options[string]{Report: rep.report})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if won != "fast" {
		t.Fatalf("won %q", won)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("race took %v", d)
	}
	ev := rep.wait(t, 3)
	if ev["fast"].result != Won || ev["slow"].result != Lost || ev["slow2"].result != Lost {
		t.Errorf("reports %v", ev)
	}
	if !errors.Is(ev["slow"].err, context.Canceled) {
		t.Errorf("slow dial not cancelled: %v", ev["slow"].err)
	}
	// The winner works.
	if _, err := conn.Write([]byte("hello")); err != nil {
		t.Fatal(err)
	}
	if err := conn.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	if s := <-srv.got; s != "hello" {
		t.Errorf("server got %q", s)
	}
}

// TestLoserClosed: a candidate that connects after the winner has its
// connection closed, and nothing was written to it.
func TestLoserClosed(t *testing.T) {
	winner, loser := newServer(t), newServer(t)
	rep := newReports()
	returned := make(chan struct{})
	dial := func(ctx context.Context, c string) (*net.TCPConn, error) {
		if c == "late" {
			<-returned // connects only once the race is decided
			return tcpDial(context.Background(), loser.addr)
		}
		return tcpDial(ctx, winner.addr)
	}
	conn, won, err := Dial(ctxT(t), []string{"late", "first"}, dial, Options[string]{Report: rep.report})
	close(returned)
	if err != nil {
		t.Fatal(err)
	}
	if won != "first" {
		t.Fatalf("won %q", won)
	}
	conn.Write([]byte("app bytes"))
	conn.Close()
	ev := rep.wait(t, 2)
	if ev["first"].result != Won || ev["late"].result != Lost || ev["late"].err != nil {
		t.Errorf("reports %v", ev)
	}
	select {
	case s := <-loser.got: // EOF: the race closed it
		if s != "" {
			t.Errorf("loser received %q", s)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("loser connection not closed")
	}
	if s := <-winner.got; s != "app bytes" {
		t.Errorf("winner got %q", s)
	}
}

var (
	errRefused = errors.New("refused")
	errNoRoute = errors.New("no route")
)

func TestAllFail(t *testing.T) {
	rep := newReports()
	fails := map[string]error{"a": errRefused, "b": errNoRoute, "c": errRefused}
	for _, o := range []Options[string]{
		{Report: rep.report},
		{Report: rep.report, Fanout: 1},
		{Report: rep.report, Stagger: time.Hour},
	} {
		t.Run(fmt.Sprintf("fanout=%d stagger=%v", o.Fanout, o.Stagger), func(t *testing.T) {
			conn, _, err := Dial(ctxT(t), []string{"a", "b", "c"}, func(ctx context.Context, c string) (*net.TCPConn, error) {
				return nil, fails[c]
			}, o)
			if conn != nil || err == nil {
				t.Fatalf("conn %v err %v", conn, err)
			}
			if !errors.Is(err, errRefused) || !errors.Is(err, errNoRoute) {
				t.Errorf("error does not wrap the causes: %v", err)
			}
			for _, c := range []string{"a: refused", "b: no route", "c: refused", "all 3 candidates failed"} {
				if !strings.Contains(err.Error(), c) {
					t.Errorf("error %q lacks %q", err, c)
				}
			}
			ev := rep.wait(t, 3)
			for c, e := range ev {
				if e.result != Failed || !errors.Is(e.err, fails[c]) {
					t.Errorf("%s: %v", c, e)
				}
			}
		})
	}
}

func TestNoCandidates(t *testing.T) {
	_, _, err := Dial(ctxT(t), nil, func(context.Context, string) (*net.TCPConn, error) { panic("dialed") }, Options[string]{})
	if !errors.Is(err, ErrNoCandidates) {
		t.Fatal(err)
	}
}

// TestFanout: at most Fanout dials are in flight, and a failure lets the
// next one start.
func TestFanout(t *testing.T) {
	srv := newServer(t)
	var inflight, peak atomic.Int32
	var launched atomic.Int32
	dial := func(ctx context.Context, c int) (*net.TCPConn, error) {
		launched.Add(1)
		n := inflight.Add(1)
		defer inflight.Add(-1)
		for {
			p := peak.Load()
			if n <= p || peak.CompareAndSwap(p, n) {
				break
			}
		}
		if c < 4 {
			return nil, fmt.Errorf("candidate %d down", c)
		}
		return tcpDial(ctx, srv.addr)
	}
	conn, won, err := Dial(ctxT(t), []int{0, 1, 2, 3, 4, 5}, dial, Options[int]{
		Fanout:   2,
		Priority: func(c int) int { return c }, // the given order
	})
	if err != nil {
		t.Fatal(err)
	}
	conn.Close()
	if won != 4 && won != 5 {
		t.Errorf("won %d", won)
	}
	if p := peak.Load(); p > 2 {
		t.Errorf("%d dials in flight, fanout 2", p)
	}
	if l := launched.Load(); l < 5 {
		t.Errorf("only %d launched", l)
	}
}

// TestStagger: with a stagger, the next candidate waits for the delay or
// for a failure, whichever comes first.
func TestStagger(t *testing.T) {
	srv := newServer(t)
	// inOrder launches candidates in the order given.
	inOrder := func(cands ...string) func(string) int {
		return func(c string) int { return slices.Index(cands, c) }
	}

	t.Run("failure starts the next at once", func(t *testing.T) {
		conn, won, err := Dial(ctxT(t), []string{"down", "up"}, func(ctx context.Context, c string) (*net.TCPConn, error) {
			if c == "down" {
				return nil, errRefused
			}
			return tcpDial(ctx, srv.addr)
		}, Options[string]{Stagger: time.Hour, Priority: inOrder("down", "up")})
		if err != nil || won != "up" {
			t.Fatalf("won %q err %v", won, err)
		}
		conn.Close()
	})

	t.Run("success within the delay: the next never starts", func(t *testing.T) {
		var launched []string
		var mu sync.Mutex
		conn, won, err := Dial(ctxT(t), []string{"a", "b", "c"}, func(ctx context.Context, c string) (*net.TCPConn, error) {
			mu.Lock()
			launched = append(launched, c)
			mu.Unlock()
			return tcpDial(ctx, srv.addr)
		}, Options[string]{Stagger: time.Hour, Priority: inOrder("a", "b", "c")})
		if err != nil || won != "a" {
			t.Fatalf("won %q err %v", won, err)
		}
		conn.Close()
		mu.Lock()
		defer mu.Unlock()
		if !slices.Equal(launched, []string{"a"}) {
			t.Errorf("launched %v", launched)
		}
	})

	t.Run("delay elapses: the next starts and wins", func(t *testing.T) {
		rep := newReports()
		conn, won, err := Dial(ctxT(t), []string{"hang", "up"}, func(ctx context.Context, c string) (*net.TCPConn, error) {
			if c == "hang" {
				<-ctx.Done()
				return nil, ctx.Err()
			}
			return tcpDial(ctx, srv.addr)
		}, Options[string]{Stagger: 20 * time.Millisecond, Priority: inOrder("hang", "up"), Report: rep.report})
		if err != nil || won != "up" {
			t.Fatalf("won %q err %v", won, err)
		}
		conn.Close()
		if ev := rep.wait(t, 2); ev["hang"].result != Lost {
			t.Errorf("reports %v", ev)
		}
	})
}

func TestPriorityAndShuffle(t *testing.T) {
	type cand struct {
		name  string
		local bool
	}
	cands := []cand{{"r1", false}, {"l1", true}, {"r2", false}, {"l2", true}}
	prio := func(c cand) int {
		if c.local {
			return 0
		}
		return 1
	}
	prios := make([]int, len(cands))
	for i, c := range cands {
		prios[i] = prio(c)
	}
	firsts := map[string]int{}
	for range 200 {
		o := order(prios)
		if !cands[o[0]].local || !cands[o[1]].local || cands[o[2]].local || cands[o[3]].local {
			t.Fatalf("priority not respected: %v", o)
		}
		firsts[cands[o[0]].name]++
	}
	if len(firsts) != 2 {
		t.Errorf("equal candidates not shuffled: first was always %v", firsts)
	}

	// Without priority, everything is shuffled.
	seen := map[int]bool{}
	for range 200 {
		seen[order(make([]int, len(cands)))[0]] = true
	}
	if len(seen) != 4 {
		t.Errorf("first candidate over 200 orders: %v", seen)
	}
}

func TestContextCancel(t *testing.T) {
	rep := newReports()
	ctx, cancel := context.WithCancel(context.Background())
	started := make(chan struct{}, 2)
	errc := make(chan error, 1)
	go func() {
		_, _, err := Dial(ctx, []string{"a", "b"}, func(ctx context.Context, c string) (*net.TCPConn, error) {
			started <- struct{}{}
			<-ctx.Done()
			return nil, ctx.Err()
		}, Options[string]{Report: rep.report})
		errc <- err
	}()
	<-started
	<-started
	cancel()
	select {
	case err := <-errc:
		if !errors.Is(err, context.Canceled) {
			t.Errorf("err %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Dial ignored cancellation")
	}
	for c, e := range rep.wait(t, 2) {
		if e.result != Failed {
			t.Errorf("%s: %v", c, e)
		}
	}
}
