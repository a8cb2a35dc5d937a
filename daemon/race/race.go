// Package race dials several candidates for one connection and keeps the
// first that connects: Meshless's racing for service endpoints.
//
//	hist := race.NewHistory(race.HistoryConfig{}) // one per daemon
//	c, won, err := race.Dial(ctx, candidates, dialOne, race.Options[routes.Candidate]{
//		Learn:    hist,
//		Key:      func(c routes.Candidate) string { return c.String() },
//		Priority: func(c routes.Candidate) int { return 0 },
//		Report:   func(c routes.Candidate, r race.Result, err error) { metric.WithLabelValues(string(r)).Inc() },
//	})
//
// With a History the race is staggered as RFC 8305 (Happy Eyeballs)
// staggers address families: the candidate expected to connect soonest
// goes first, the next only once the first has taken clearly longer than
// it usually does, or has failed. When every instance is healthy a race
// costs one dial; when one stalls, the next is under way after a few
// milliseconds, and the History makes the staller the last choice of the
// next races. Without one, candidates launch at once (up to Fanout) or
// Stagger apart, by priority then at random.
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
	// Stagger, when positive and Learn is nil, delays each launch after
	// the first until Stagger has passed since the previous launch or a
	// dial in flight has failed, whichever is first (RFC 8305, Happy
	// Eyeballs).
	Stagger time.Duration
	// Learn, when set, makes the race adaptive: candidates are ordered by
	// what Learn knows of them (see History.plan), and each launch after
	// the first waits for the previous candidate's attempt delay, derived
	// from its usual connect time, or for a failure. Stagger is then
	// ignored. The race's outcomes are recorded in Learn.
	Learn *History
	// Key names a candidate in Learn; fmt's %v of it when nil.
	Key func(C) string
	// Priority, when set, orders candidates: lower values are dialed
	// first. Candidates of equal priority are dialed in random order (or,
	// with Learn, by their cost).
	Priority func(C) int
	// Report, when set, receives the result of every launched candidate
	// (candidates never launched are not reported). Calls for the losers
	// may come after Dial has returned; Report must be safe for concurrent
	// use when shared between races.
	Report func(c C, r Result, err error)
}

type result[T io.Closer] struct {
	i       int
	conn    T // valid when err is nil
	err     error
	elapsed time.Duration
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
	r := &racer[C, T]{cands: cands, dial: dial, o: o, results: make(chan result[T], len(cands))}
	r.plan()
	r.ctx, r.cancel = context.WithCancel(ctx)
	defer r.stopTimer()
	for {
		if r.launchable() && (r.inflight == 0 || r.launchNow || r.delay() <= 0) {
			r.launch()
			continue
		}
		if r.launchable() && r.timerC == nil {
			r.timer = time.NewTimer(r.delay())
			r.timerC = r.timer.C
		}
		if r.inflight == 0 {
			r.cancel()
			return noneT, zero, fmt.Errorf("all %d candidates failed: %w", len(cands), errors.Join(r.errs...))
		}
		select {
		case res := <-r.results:
			r.inflight--
			if res.err == nil {
				r.report(res.i, Won, nil)
				r.observe(res, won)
				r.finish(Lost)
				return res.conn, cands[res.i], nil
			}
			r.report(res.i, Failed, res.err)
			r.observe(res, failed)
			r.errs = append(r.errs, fmt.Errorf("%v: %w", cands[res.i], res.err))
			r.launchNow = true // a failure starts the next attempt at once
		case <-r.timerC:
			r.timer, r.timerC = nil, nil
			r.launchNow = true
			r.stall(r.last)
		case <-ctx.Done():
			r.finish(Failed)
			return noneT, zero, fmt.Errorf("race: %w", errors.Join(append([]error{ctx.Err()}, r.errs...)...))
		}
	}
}

// racer is one race's state.
type racer[C any, T io.Closer] struct {
	cands   []C
	dial    DialFunc[C, T]
	o       Options[C]
	ctx     context.Context // the dials'; cancelled once decided
	cancel  context.CancelFunc
	results chan result[T] // buffered: dials never block on it

	order  []int           // launch order, indices of cands
	keys   []string        // with Learn: the candidates' keys
	delays []time.Duration // with Learn: each candidate's attempt delay
	stalls []*stallMark    // with Learn: stalls recorded when a delay expired

	next, inflight int
	last           int // the candidate launched last
	launchNow      bool
	timer          *time.Timer
	timerC         <-chan time.Time
	errs           []error
}

// plan sets the launch order and, with Learn, the attempt delays.
func (r *racer[C, T]) plan() {
	prio := make([]int, len(r.cands))
	if r.o.Priority != nil {
		for i, c := range r.cands {
			prio[i] = r.o.Priority(c)
		}
	}
	if r.o.Learn == nil {
		r.order = order(prio)
		return
	}
	r.keys = make([]string, len(r.cands))
	for i, c := range r.cands {
		if r.o.Key != nil {
			r.keys[i] = r.o.Key(c)
		} else {
			r.keys[i] = fmt.Sprint(c)
		}
	}
	r.order, r.delays = r.o.Learn.plan(r.keys, prio)
	r.stalls = make([]*stallMark, len(r.cands))
}

// launchable says whether a candidate is left and the fanout allows it.
func (r *racer[C, T]) launchable() bool {
	return r.next < len(r.order) && (r.o.Fanout <= 0 || r.inflight < r.o.Fanout)
}

// delay is how long the next launch waits for the last one.
func (r *racer[C, T]) delay() time.Duration {
	if r.delays != nil {
		return r.delays[r.last]
	}
	return r.o.Stagger
}

// launch dials the next candidate in the background.
func (r *racer[C, T]) launch() {
	r.launchNow = false
	r.stopTimer()
	i := r.order[r.next]
	r.next++
	r.inflight++
	r.last = i
	go func() {
		start := time.Now()
		c, err := r.dial(r.ctx, r.cands[i])
		r.results <- result[T]{i, c, err, time.Since(start)}
	}()
}

func (r *racer[C, T]) stopTimer() {
	if r.timer != nil {
		r.timer.Stop()
		r.timer, r.timerC = nil, nil
	}
}

func (r *racer[C, T]) report(i int, res Result, err error) {
	if r.o.Report != nil {
		r.o.Report(r.cands[i], res, err)
	}
}

// observe tells Learn how a candidate ended; a failure after the race's
// context ended is a cancellation, not the candidate's fault.
func (r *racer[C, T]) observe(res result[T], o outcome) {
	if r.o.Learn == nil {
		return
	}
	if o == failed && r.ctx.Err() != nil {
		o = cancelled
	}
	r.o.Learn.observe(r.keys[res.i], o, res.elapsed, r.delays[res.i], r.stalls[res.i])
}

// stall tells Learn at once that candidate i is still dialing after its
// attempt delay.
func (r *racer[C, T]) stall(i int) {
	if r.o.Learn == nil || r.stalls[i] != nil {
		return
	}
	r.stalls[i] = r.o.Learn.stalledNow(r.keys[i])
}

// finish cancels the dials in flight and reaps them in the background:
// connections are closed and reported lost, errors reported as res.
func (r *racer[C, T]) finish(res Result) {
	r.cancel()
	if r.inflight == 0 {
		return
	}
	go func(n int) {
		for range n {
			x := <-r.results
			if x.err == nil {
				x.conn.Close()
				r.report(x.i, Lost, nil)
				r.observe(x, connected)
				continue
			}
			r.report(x.i, res, x.err)
			r.observe(x, cancelled)
		}
	}(r.inflight)
}

// order returns the indices of candidates with priorities prio in dialing
// order: by priority, equal priorities shuffled.
func order(prio []int) []int {
	idx := make([]int, len(prio))
	for i := range idx {
		idx[i] = i
	}
	rand.Shuffle(len(idx), func(i, j int) { idx[i], idx[j] = idx[j], idx[i] })
	slices.SortStableFunc(idx, func(a, b int) int { return cmp.Compare(prio[a], prio[b]) })
	return idx
}
