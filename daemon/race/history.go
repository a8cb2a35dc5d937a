package race

import (
	"cmp"
	"math"
	"math/rand/v2"
	"slices"
	"sync"
	"time"
)

// Defaults of a History (see HistoryConfig).
const (
	DefaultMinDelay = 5 * time.Millisecond
	DefaultMaxDelay = 250 * time.Millisecond
	DefaultHalfLife = 10 * time.Second
)

// stallWeight is the weight of the newest outcome in a candidate's stall
// score: one stall lifts a clean candidate's score to 0.25, which makes it
// costlier than its equals (it is no longer tried first among them).
const stallWeight = 0.25

// suspectStall is the stall score from which a candidate is tried after
// every other one, whatever its priority: two stalls within seconds (0.44)
// and no attempt in time since. One stall is not enough to demote a
// candidate below a lower priority: on a loaded node a healthy local
// instance now and then misses its attempt delay and is overtaken by a
// remote one, and it should not hand seconds of connections to a tunnel
// for it.
const suspectStall = 0.4

// forgetAfter is how long an unused candidate's figures are kept.
const forgetAfter = 10 * time.Minute

// HistoryConfig tunes a History; zero fields take the defaults.
type HistoryConfig struct {
	// MinDelay and MaxDelay clamp the attempt delay (RFC 8305 §5: not
	// below a few milliseconds, 250 ms when nothing is known).
	MinDelay, MaxDelay time.Duration
	// HalfLife is how fast a stall is forgiven: a candidate that stalled
	// and was not tried since is tried first again after a few of them,
	// so a healed instance gets its share back.
	HalfLife time.Duration
}

// History learns, across races, how each candidate connects: a smoothed
// connect time and its variation (as TCP estimates round trips, RFC 6298)
// and a stall score, the decaying share of its recent attempts that
// failed or had not connected by their attempt delay. Races given a
// History try the candidate expected to connect soonest first and wait
// for it only as long as it usually takes (Options.Learn).
//
// A History is safe for concurrent use; one per daemon serves all races.
// Candidates are identified by the key Options.Key gives them.
type History struct {
	cfg     HistoryConfig
	mu      sync.Mutex
	stats   map[string]*stat
	updates int
	// srtt is the smoothed connect time of every candidate together: the
	// guess for a candidate never seen, when its race knows no other.
	srtt time.Duration
}

// stat is what a History knows of one candidate.
type stat struct {
	srtt, rttvar time.Duration // smoothed connect time and variation; 0 when no sample
	stall        float64       // stall score at stallAt
	stallAt      time.Time
	used         time.Time
}

// NewHistory returns an empty History.
func NewHistory(cfg HistoryConfig) *History {
	if cfg.MinDelay <= 0 {
		cfg.MinDelay = DefaultMinDelay
	}
	if cfg.MaxDelay <= 0 {
		cfg.MaxDelay = DefaultMaxDelay
	}
	cfg.MaxDelay = max(cfg.MaxDelay, cfg.MinDelay)
	if cfg.HalfLife <= 0 {
		cfg.HalfLife = DefaultHalfLife
	}
	return &History{cfg: cfg, stats: map[string]*stat{}}
}

// view is a candidate's figures as one race sees them.
type view struct {
	known   bool // at least one connect time
	srtt    time.Duration
	delay   time.Duration
	stall   float64
	suspect bool
	cost    time.Duration
}

// views returns the figures of keys at now. The attempt delay of a
// candidate is srtt + max(4·rttvar, srtt), at least twice its usual
// connect time and above nearly all of them, clamped; without a sample of
// its own, that of the others' average. Its cost is the expected time to a
// connection when it is tried first: its connect time, plus, in the share
// of attempts that stall, the delay before the next is tried. A candidate
// without a sample counts as the average of the race's others (of every
// candidate when they have none either), so it gets its turn, and waits
// three times that; the maximum when nothing is known at all.
func (h *History) views(keys []string, now time.Time) []view {
	h.mu.Lock()
	defer h.mu.Unlock()
	vs := make([]view, len(keys))
	var sum time.Duration
	var n int
	for i, k := range keys {
		s := h.stats[k]
		if s == nil {
			continue
		}
		vs[i].stall = h.decayed(s, now)
		if s.srtt > 0 {
			vs[i].known, vs[i].srtt = true, s.srtt
			vs[i].delay = h.clamp(s.srtt + max(4*s.rttvar, s.srtt))
			sum += vs[i].srtt
			n++
		}
	}
	for i := range vs {
		v := &vs[i]
		if !v.known {
			// Unknown: as good as the average, so it gets tried.
			v.srtt, v.delay = h.srtt, h.cfg.MaxDelay
			if n > 0 {
				v.srtt = sum / time.Duration(n)
			}
			if v.srtt > 0 {
				v.delay = h.clamp(3 * v.srtt)
			}
		}
		v.suspect = v.stall >= suspectStall
		v.cost = v.srtt + time.Duration(v.stall*float64(v.delay))
	}
	return vs
}

// decayed returns s's stall score at now: halved every HalfLife since it
// was last updated.
func (h *History) decayed(s *stat, now time.Time) float64 {
	if s.stall == 0 {
		return 0
	}
	age := now.Sub(s.stallAt)
	if age <= 0 {
		return s.stall
	}
	return s.stall * math.Exp2(-float64(age)/float64(h.cfg.HalfLife))
}

func (h *History) clamp(d time.Duration) time.Duration {
	return min(max(d, h.cfg.MinDelay), h.cfg.MaxDelay)
}

// plan returns the launch order of candidates with keys and priorities
// prio, and the attempt delay after launching each (indexed like keys).
//
// Candidates that recently stalled (suspects) go last; the others by
// priority, then by cost. The first of the leading group (same priority,
// no suspect) is the cheaper of two picked at random, the power of two
// choices: equally fast instances share the connections instead of the
// one that happened to answer fastest taking them all, while a slower one
// is never tried first.
func (h *History) plan(keys []string, prio []int) ([]int, []time.Duration) {
	vs := h.views(keys, time.Now())
	idx := make([]int, len(keys))
	for i := range idx {
		idx[i] = i
	}
	rand.Shuffle(len(idx), func(i, j int) { idx[i], idx[j] = idx[j], idx[i] })
	slices.SortStableFunc(idx, func(a, b int) int {
		if vs[a].suspect != vs[b].suspect {
			if vs[a].suspect {
				return 1
			}
			return -1
		}
		if prio[a] != prio[b] {
			return prio[a] - prio[b]
		}
		return cmp.Compare(vs[a].cost, vs[b].cost)
	})
	lead := 1
	for lead < len(idx) && !vs[idx[lead]].suspect && !vs[idx[0]].suspect && prio[idx[lead]] == prio[idx[0]] {
		lead++
	}
	if lead >= 2 {
		a, b := rand.IntN(lead), rand.IntN(lead-1)
		if b >= a {
			b++
		}
		pick := a
		if vs[idx[b]].cost < vs[idx[a]].cost {
			pick = b
		}
		// Move the pick to the front, the rest keep their order.
		first := idx[pick]
		copy(idx[1:pick+1], idx[:pick])
		idx[0] = first
	}
	delays := make([]time.Duration, len(keys))
	for i, v := range vs {
		delays[i] = v.delay
	}
	return idx, delays
}

// outcome is how one launched candidate ended, for a History.
type outcome int

const (
	// won: the dial returned the race's first connection after elapsed.
	won outcome = iota
	// connected: the dial returned a connection after the race was won.
	connected
	// failed: the dial returned an error of its own.
	failed
	// cancelled: the race was decided (or abandoned) while it dialed.
	cancelled
)

// stallMark is a stall recorded when an attempt delay expired, with the
// score it replaced.
type stallMark struct {
	prev       float64
	prevAt, at time.Time
}

// stalledNow records that key has not connected by its attempt delay,
// at once: the races that start meanwhile already try it last.
func (h *History) stalledNow(key string) *stallMark {
	now := time.Now()
	h.mu.Lock()
	defer h.mu.Unlock()
	s := h.statLocked(key, now)
	m := &stallMark{prev: s.stall, prevAt: s.stallAt, at: now}
	h.updateStallLocked(s, true, now)
	return m
}

// observe records a launched candidate's outcome after elapsed, given the
// attempt delay it had. A winner never stalled: late or not, it was the
// first to connect (a slow connect shows in its connect time). A losing
// connection counts as a stall when it came after its delay, a failure
// always, a cancellation only when it was still dialing after its delay
// (it was overtaken); an earlier cancellation says nothing of the
// candidate. mark, when set, is the stall already recorded for this
// attempt: withdrawn if the candidate won after all (a loaded machine
// made it late, it is not sick), else kept as is.
func (h *History) observe(key string, o outcome, elapsed, delay time.Duration, mark *stallMark) {
	now := time.Now()
	h.mu.Lock()
	defer h.mu.Unlock()
	s := h.statLocked(key, now)
	stalled := elapsed > delay
	switch o {
	case won, connected:
		if o == won {
			stalled = false
		}
		if h.srtt == 0 {
			h.srtt = elapsed
		} else {
			h.srtt += (elapsed - h.srtt) / 8
		}
		if s.srtt == 0 {
			s.srtt, s.rttvar = elapsed, elapsed/2
		} else {
			// RFC 6298's gains: 1/4 for the variation, 1/8 for the mean.
			diff := s.srtt - elapsed
			if diff < 0 {
				diff = -diff
			}
			s.rttvar += (diff - s.rttvar) / 4
			s.srtt += (elapsed - s.srtt) / 8
		}
	case failed:
		stalled = true
	case cancelled:
		if !stalled {
			return
		}
	}
	if mark != nil {
		if stalled {
			return // recorded when the delay expired
		}
		if s.stallAt.Equal(mark.at) { // nothing recorded since
			s.stall, s.stallAt = mark.prev, mark.prevAt
		}
	}
	h.updateStallLocked(s, stalled, now)
}

// statLocked returns key's figures, new ones if it had none, marked used.
func (h *History) statLocked(key string, now time.Time) *stat {
	s := h.stats[key]
	if s == nil {
		s = &stat{}
		h.stats[key] = s
	}
	s.used = now
	h.updates++
	if h.updates%1024 == 0 {
		h.forgetLocked(now)
	}
	return s
}

// updateStallLocked moves s's stall score towards 1 for a stall, 0 for
// an attempt in time.
func (h *History) updateStallLocked(s *stat, stalled bool, now time.Time) {
	x := 0.0
	if stalled {
		x = 1
	}
	s.stall = h.decayed(s, now)*(1-stallWeight) + x*stallWeight
	s.stallAt = now
}

// forgetLocked drops the figures of candidates unused for forgetAfter:
// endpoints come and go, the History must not grow with them.
func (h *History) forgetLocked(now time.Time) {
	for k, s := range h.stats {
		if now.Sub(s.used) > forgetAfter {
			delete(h.stats, k)
		}
	}
}
