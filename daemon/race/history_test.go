package race

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/meshless/meshless/internal/testenv"
)

// obs is one recorded outcome, for a History fed by a test.
type obs struct {
	key     string
	o       outcome
	elapsed time.Duration
	n       int // times; 1 when 0
}

func feed(h *History, delay time.Duration, os ...obs) {
	for _, o := range os {
		for range max(o.n, 1) {
			h.observe(o.key, o.o, o.elapsed, delay, nil)
		}
	}
}

// TestAttemptDelay: the wait for a candidate before the next is launched
// is about twice its usual connect time, clamped, and the maximum when
// nothing is known.
func TestAttemptDelay(t *testing.T) {
	for _, tc := range []struct {
		name     string
		obs      []obs
		key      string
		min, max time.Duration
	}{
		{"nothing known: the maximum", nil, "a", DefaultMaxDelay, DefaultMaxDelay},
		{"fast connects: the minimum", []obs{{"a", connected, 200 * time.Microsecond, 8}}, "a", DefaultMinDelay, DefaultMinDelay},
		{"steady 40ms: twice that", []obs{{"a", connected, 40 * time.Millisecond, 8}}, "a", 80 * time.Millisecond, 81 * time.Millisecond},
		{"jittery: above twice the mean", []obs{
			{"a", connected, 10 * time.Millisecond, 0}, {"a", connected, 50 * time.Millisecond, 0},
			{"a", connected, 10 * time.Millisecond, 0}, {"a", connected, 50 * time.Millisecond, 0},
		}, "a", 60 * time.Millisecond, 200 * time.Millisecond},
		{"slow: the maximum", []obs{{"a", connected, 400 * time.Millisecond, 4}}, "a", DefaultMaxDelay, DefaultMaxDelay},
		{"unknown among known: thrice their mean", []obs{{"b", connected, 10 * time.Millisecond, 4}}, "a", 30 * time.Millisecond, 30 * time.Millisecond},
		{"failures only: the maximum", []obs{{"a", failed, time.Millisecond, 3}}, "a", DefaultMaxDelay, DefaultMaxDelay},
		{"nothing known in the race: thrice everyone's mean", []obs{{"elsewhere", connected, 20 * time.Millisecond, 4}}, "a", 60 * time.Millisecond, 60 * time.Millisecond},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := NewHistory(HistoryConfig{})
			feed(h, time.Second, tc.obs...)
			_, delays := h.plan([]string{tc.key, "b"}, []int{0, 0})
			if d := delays[0]; d < tc.min || d > tc.max {
				t.Errorf("delay %v, want %v..%v", d, tc.min, tc.max)
			}
		})
	}
}

// firsts plans n races among keys and counts who is launched first, and
// who last.
func firsts(h *History, keys []string, prio []int, n int) (first, last map[string]int) {
	first, last = map[string]int{}, map[string]int{}
	for range n {
		idx, _ := h.plan(keys, prio)
		first[keys[idx[0]]]++
		last[keys[idx[len(idx)-1]]]++
	}
	return first, last
}

// TestPlan: who a learning race tries first. Every case fails with the
// old order (priority, then random).
func TestPlan(t *testing.T) {
	const n = 300
	ms := time.Millisecond
	for _, tc := range []struct {
		name  string
		keys  []string
		prio  []int
		obs   []obs
		check func(first, last map[string]int) error
	}{
		{"a stall sinks a candidate below every healthy one, whatever its priority",
			[]string{"sick", "b", "c"}, []int{0, 1, 1},
			[]obs{{"sick", connected, ms, 5}, {"sick", cancelled, 20 * ms, 2}, {"b", connected, ms, 1}, {"c", connected, ms, 1}},
			func(first, last map[string]int) error {
				if first["sick"] != 0 || last["sick"] != n {
					return fmt.Errorf("sick first %d, last %d of %d", first["sick"], last["sick"], n)
				}
				return nil
			}},
		{"one stall does not outweigh priority (a hiccup)",
			[]string{"local", "remote"}, []int{0, 1},
			[]obs{{"local", connected, ms, 5}, {"local", cancelled, 20 * ms, 1}, {"remote", connected, 2 * ms, 5}},
			func(first, _ map[string]int) error {
				if first["local"] != n {
					return fmt.Errorf("firsts %v", first)
				}
				return nil
			}},
		{"a failure sinks a candidate among equals",
			[]string{"down", "b"}, []int{0, 0},
			[]obs{{"down", failed, ms, 1}},
			func(first, _ map[string]int) error {
				if first["down"] != 0 {
					return fmt.Errorf("down first %d of %d", first["down"], n)
				}
				return nil
			}},
		{"the faster of two is always first",
			[]string{"slow", "fast"}, []int{0, 0},
			[]obs{{"slow", connected, 8 * ms, 4}, {"fast", connected, ms, 4}},
			func(first, _ map[string]int) error {
				if first["fast"] != n {
					return fmt.Errorf("fast first %d of %d", first["fast"], n)
				}
				return nil
			}},
		{"the slowest of three is never first, the others share",
			[]string{"slow", "a", "b"}, []int{0, 0, 0},
			[]obs{{"slow", connected, 8 * ms, 4}, {"a", connected, ms, 4}, {"b", connected, ms, 4}},
			func(first, _ map[string]int) error {
				if first["slow"] != 0 || first["a"] < n/5 || first["b"] < n/5 {
					return fmt.Errorf("firsts %v", first)
				}
				return nil
			}},
		{"priority still first among the healthy",
			[]string{"remote", "local"}, []int{1, 0},
			[]obs{{"remote", connected, ms, 4}, {"local", connected, 2 * ms, 4}},
			func(first, _ map[string]int) error {
				if first["local"] != n {
					return fmt.Errorf("firsts %v", first)
				}
				return nil
			}},
		{"an unknown candidate counts as average and gets its turn",
			[]string{"known", "new"}, []int{0, 0},
			[]obs{{"known", connected, ms, 4}},
			func(first, _ map[string]int) error {
				if first["new"] < n/5 || first["known"] < n/5 {
					return fmt.Errorf("firsts %v", first)
				}
				return nil
			}},
		{"a cancellation before the delay says nothing",
			[]string{"a", "b"}, []int{0, 0},
			[]obs{{"a", connected, ms, 4}, {"b", connected, ms, 4}, {"a", cancelled, 2 * ms, 3}},
			func(first, _ map[string]int) error {
				if first["a"] < n/5 || first["b"] < n/5 {
					return fmt.Errorf("firsts %v", first)
				}
				return nil
			}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := NewHistory(HistoryConfig{})
			feed(h, 10*ms, tc.obs...)
			if err := tc.check(firsts(h, tc.keys, tc.prio, n)); err != nil {
				t.Error(err)
			}
		})
	}
}

// TestStallForgiven: a candidate that stalled and is not tried again is
// tried first again after some half-lives, so a healed instance comes
// back.
func TestStallForgiven(t *testing.T) {
	h := NewHistory(HistoryConfig{HalfLife: 20 * time.Millisecond})
	keys, prio := []string{"healed", "b"}, []int{0, 1}
	feed(h, 10*time.Millisecond, obs{"healed", connected, time.Millisecond, 4}, obs{"healed", failed, 0, 2})
	if first, _ := firsts(h, keys, prio, 50); first["healed"] != 0 {
		t.Fatalf("just failed, yet first %d of 50", first["healed"])
	}
	testenv.Eventually(t, 5*time.Second, func() error {
		if first, _ := firsts(h, keys, prio, 50); first["healed"] != 50 {
			return errors.New("not forgiven yet")
		}
		return nil
	})
}

// TestLateWinner: a stall recorded when the attempt delay expired is
// withdrawn when the candidate wins after all (a loaded machine made it
// late), and kept when it was overtaken or failed.
func TestLateWinner(t *testing.T) {
	const delay = 5 * time.Millisecond
	for _, tc := range []struct {
		name    string
		o       outcome
		suspect bool
	}{
		{"won late: not a suspect", won, false},
		{"overtaken: a suspect", cancelled, true},
		{"connected after the winner: a suspect", connected, true},
		{"failed: a suspect", failed, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := NewHistory(HistoryConfig{})
			// One stall before: this one makes it a suspect, unless withdrawn.
			feed(h, delay, obs{"late", connected, time.Millisecond, 4}, obs{"b", connected, time.Millisecond, 4},
				obs{"late", cancelled, 2 * delay, 1})
			m := h.stalledNow("late")
			if v := h.views([]string{"late"}, time.Now()); !v[0].suspect {
				t.Fatalf("not a suspect right after its delay expired: %+v", v[0])
			}
			h.observe("late", tc.o, 2*delay, delay, m)
			if v := h.views([]string{"late"}, time.Now()); v[0].suspect != tc.suspect {
				t.Errorf("suspect %v, want %v (%+v)", v[0].suspect, tc.suspect, v[0])
			}
		})
	}
}
