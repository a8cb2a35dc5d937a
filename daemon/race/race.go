// Package race dials several candidates for one connection in parallel and
// keeps the first that connects: Meshless's racing for service endpoints
// on other nodes.
//
//	c, won, err := race.Dial(ctx, candidates, dialOne, race.Options[routes.Candidate]{
//		Stagger:  50 * time.Millisecond,
//		Priority: func(c routes.Candidate) int { return 0 },
//		Report:   func(c routes.Candidate, r race.Result, err error) { metric.WithLabelValues(string(r)).Inc() },
//	})
//
// A dial function returns only a connection that is ready for application
// bytes (for the tunnel: after the far side's OK), and the race closes every
// connection but the winner's, so no application byte is ever written to a
// loser.
package race

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"slices"
	"time"
)

// Result is the outcome of one candidate in a race, as reported to
// Options.Report; the values are the meshless_race_total result labels.
type Result string

// Results.
const (
	// Won: the candidate connected first; its connection is returned.
	Won Result = "won"
	// Lost: the candidate was cancelled, or connected, after another won;
	// its connection, if any, was closed.
	Lost Result = "lost"
	// Failed: the candidate's dial failed before the race was decided.
	Failed Result = "failed"
)

// ErrNoCandidates is returned by Dial for an empty candidate list.
var ErrNoCandidates = errors.New("no candidates")

// DialFunc connects to one candidate. It must honour ctx and return a
// connection only once it is ready to carry application bytes.
// T is the connection type, *net.TCPConn or net.Conn for a mix of TCP and
// unix connections.
type DialFunc[C any, T io.Closer] func(ctx context.Context, c C) (T, error)

// Options tune a race. The zero value dials every candidate at once.
type Options[C any] struct {
	// Fanout bounds the number of dials in flight; 0 means all.
	Fanout int
	// Stagger, when positive, delays each launch after the first until
	// Stagger has passed since the previous launch or a dial in flight
	// has failed, whichever is first (RFC 8305, Happy Eyeballs).
	Stagger time.Duration
	// Priority, when set, orders candidates: lower values are dialed
	// first. Candidates of equal priority are dialed in random order.
	Priority func(C) int
	// Report, when set, receives the result of every launched candidate
	// (candidates never launched are not reported). Calls for the losers
	// may come after Dial has returned; Report must be safe for concurrent
	// use when shared between races.
	Report func(c C, r Result, err error)
}

type result[T io.Closer] struct {
	i    int
	conn T // valid when err is nil
	err  error
}

// Dial races the candidates and returns the first connection to succeed
// with its candidate. When every candidate fails it returns their errors
// joined; when ctx ends first it returns an error wrapping ctx.Err().
// Dials still in flight when Dial returns are cancelled, and their
// connections closed, in the background.
func Dial[C any, T io.Closer](ctx context.Context, cands []C, dial DialFunc[C, T], o Options[C]) (T, C, error) {
	var (
		zero  C
		noneT T
	)
	if len(cands) == 0 {
		return noneT, zero, ErrNoCandidates
	}
	report := func(i int, r Result, err error) {
		if o.Report != nil {
			o.Report(cands[i], r, err)
		}
	}
	order := order(cands, o)
	rctx, cancel := context.WithCancel(ctx)
	results := make(chan result[T], len(order)) // dials never block on it
	var (
		next, inflight int
		launchNow      bool
		timer          *time.Timer
		timerC         <-chan time.Time
		errs           []error
	)
	stopTimer := func() {
		if timer != nil {
			timer.Stop()
			timer, timerC = nil, nil
		}
	}
	defer stopTimer()
	// finish cancels the rest and reaps it in the background.
	finish := func(r Result) {
		cancel()
		if inflight == 0 {
			return
		}
		go func(n int) {
			for range n {
				res := <-results
				if res.err == nil {
					res.conn.Close()
					report(res.i, Lost, nil)
					continue
				}
				report(res.i, r, res.err)
			}
		}(inflight)
	}
	for {
		canLaunch := next < len(order) && (o.Fanout <= 0 || inflight < o.Fanout)
		if canLaunch && (o.Stagger <= 0 || inflight == 0 || launchNow) {
			launchNow = false
			stopTimer()
			i := order[next]
			next++
			inflight++
			go func() {
				c, err := dial(rctx, cands[i])
				results <- result[T]{i, c, err}
			}()
			continue
		}
		if canLaunch && timerC == nil {
			timer = time.NewTimer(o.Stagger)
			timerC = timer.C
		}
		if inflight == 0 {
			cancel()
			return noneT, zero, fmt.Errorf("all %d candidates failed: %w", len(cands), errors.Join(errs...))
		}
		select {
		case r := <-results:
			inflight--
			if r.err == nil {
				report(r.i, Won, nil)
				finish(Lost)
				return r.conn, cands[r.i], nil
			}
			report(r.i, Failed, r.err)
			errs = append(errs, fmt.Errorf("%v: %w", cands[r.i], r.err))
			launchNow = true // a failure starts the next attempt at once
		case <-timerC:
			timer, timerC = nil, nil
			launchNow = true
		case <-ctx.Done():
			finish(Failed)
			return noneT, zero, fmt.Errorf("race: %w", errors.Join(append([]error{ctx.Err()}, errs...)...))
		}
	}
}

// order returns the indices of cands in dialing order: by priority, equal
// priorities shuffled.
func order[C any](cands []C, o Options[C]) []int {
	idx := make([]int, len(cands))
	for i := range idx {
		idx[i] = i
	}
	rand.Shuffle(len(idx), func(i, j int) { idx[i], idx[j] = idx[j], idx[i] })
	if o.Priority != nil {
		prio := make([]int, len(cands))
		for i, c := range cands {
			prio[i] = o.Priority(c)
		}
		slices.SortStableFunc(idx, func(a, b int) int { return cmp.Compare(prio[a], prio[b]) })
	}
	return idx
}
