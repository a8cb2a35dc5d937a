package report

import "fmt"

// Evaluate fills r.Targets from the summaries.
func (r *Results) Evaluate() {
	r.Targets = nil
	// The native API's own claim: with the daemon out of the byte path
	// after the hand-off, one unix socket between the apps takes at most
	// half the time of TCP through the pods' network stacks.
	for _, test := range []string{LatFixed1, LatFixed1K} {
		for _, q := range []string{"p50", "p99"} {
			v, ok := r.ratio(Native, Same, test, q)
			r.add(fmt.Sprintf("native same-node %s (%s) ≤ 0.5× direct", q, test), "ratio ≤ 0.50", v, 0.5, false, ok)
		}
	}
	for _, setup := range []string{Meshless, UDS, Native} {
		r.meshTargets(setup)
	}
	r.memoryTargets()
	h, ok1 := r.RaceGet(RaceMeshless, false)
	l, ok2 := r.RaceGet(RaceMeshless, true)
	v := 0.0
	if ok1 && ok2 && h.P99 > 0 {
		v = l.P99 / h.P99
	}
	r.add("racing: p99 connect with a 50%-SYN-loss instance within 20% of all healthy", "ratio ≤ 1.20", v, 1.2, false, ok1 && ok2 && h.P99 > 0)
	// Racing must cost nothing when every instance is healthy.
	f, ok3 := r.RaceGet(RaceFanout1, false)
	v = 0
	if ok1 && ok3 && f.P50 > 0 {
		v = h.P50 / f.P50
	}
	r.add("racing: p50 connect with all instances healthy no worse than one at a time (--race-fanout 1)", "ratio ≤ 1.00", v, 1.0, false, ok1 && ok3 && f.P50 > 0)
}

// meshTargets adds the claims every meshed set-up is held to: same-node
// latency no worse than direct (native has its stricter row instead),
// cross-node latency close to direct, throughput and new connections.
func (r *Results) meshTargets(setup string) {
	for _, test := range []string{LatFixed1, LatFixed1K} {
		if setup != Native {
			v, ok := r.ratio(setup, Same, test, "p50")
			r.add(fmt.Sprintf("%s same-node p50 (%s) ≤ direct", setup, test), "ratio ≤ 1.00", v, 1.0, false, ok)
			v, ok = r.ratio(setup, Same, test, "p99")
			r.add(fmt.Sprintf("%s same-node p99 (%s) ≤ direct", setup, test), "ratio ≤ 1.00", v, 1.0, false, ok)
		}
		v, ok := r.ratio(setup, Cross, test, "p50")
		r.add(fmt.Sprintf("%s cross-node p50 (%s) within 5%% of direct", setup, test), "ratio ≤ 1.05", v, 1.05, false, ok)
		v, ok = r.ratio(setup, Cross, test, "p99")
		r.add(fmt.Sprintf("%s cross-node p99 (%s) within 10%% of direct", setup, test), "ratio ≤ 1.10", v, 1.10, false, ok)
	}
	for _, place := range []string{Same, Cross} {
		v, ok := r.ratio(setup, place, BulkThrough, "rate")
		r.add(fmt.Sprintf("%s %s single-stream throughput ≥ 90%% of direct", setup, place), "ratio ≥ 0.90", v, 0.9, true, ok)
		v, ok = r.ratio(setup, place, ConnRate, "rate")
		r.add(fmt.Sprintf("%s %s new-connection rate ≥ half of direct", setup, place), "ratio ≥ 0.50", v, 0.5, true, ok)
	}
}

// memoryTargets adds the one-daemon-versus-sidecars memory claims.
func (r *Results) memoryTargets() {
	m := r.Memory
	if m == nil || m.SidecarRSSSumMiB <= 0 {
		r.add("one daemon serving 100 pods vs 100 sidecars", "daemon/sidecars ≤ 0.01", 0, 0, false, false)
		return
	}
	r.add(fmt.Sprintf("one daemon serving %d pods vs %d sidecars (RSS)", m.Pods, m.Pods), "daemon/sidecars ≤ 0.01",
		m.DaemonRSSAfterMiB/m.SidecarRSSSumMiB, 0.01, false, true)
	r.add(fmt.Sprintf("one daemon serving %d pods vs %d sidecars (PSS, shared pages counted once)", m.Pods, m.Pods), "daemon/sidecars ≤ 0.01",
		m.DaemonRSSAfterMiB/m.SidecarPSSSumMiB, 0.01, false, m.SidecarPSSSumMiB > 0)
}

// add appends one claim's verdict: got against limit, a ratio; known
// false when it was not measured.
func (r *Results) add(name, want string, got, limit float64, higherBetter, known bool) {
	t := Target{Name: name, Want: want, Known: known}
	if known {
		t.Got = fmt.Sprintf("%.3f×", got)
		if higherBetter {
			t.Met = got >= limit
		} else {
			t.Met = got <= limit
		}
	} else {
		t.Got = "not measured"
	}
	r.Targets = append(r.Targets, t)
}

// ratio returns field ("p50", "p99" or "rate") of (setup, place, test)
// over the same of direct, and whether both were measured.
func (r *Results) ratio(setup, place, test, field string) (float64, bool) {
	get := func(s Summary) float64 {
		switch field {
		case "p50":
			return s.P50
		case "p99":
			return s.P99
		}
		return s.Rate
	}
	m, ok1 := r.Get(setup, place, test)
	d, ok2 := r.Get(Direct, place, test)
	if !ok1 || !ok2 || get(d) == 0 {
		return 0, false
	}
	return get(m) / get(d), true
}
