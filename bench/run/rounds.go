package run

// The measurement rounds: every set-up and placement, each test with the
// CPU and memory of the processes the set-up costs.

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/meshless/meshless/bench/load"
	"github.com/meshless/meshless/bench/report"
)

// meshPIDs are the processes whose CPU and memory the set-up costs.
func (b *bench) meshPIDs(place string) []int {
	switch b.setup {
	case report.Meshless, report.UDS, report.Sockmap, report.Native:
		n1, _ := b.l.Node(1)
		pids := []int{n1.PID}
		if place == report.Cross {
			n2, _ := b.l.Node(2)
			pids = append(pids, n2.PID)
		}
		return pids
	case report.Sidecar:
		srv := sameServer
		if place == report.Cross {
			srv = crossSrv
		}
		return []int{b.haproxy[client].Process.Pid, b.haproxy[srv].Process.Pid}
	}
	return nil
}

// rounds measures every set-up and placement, p.rounds times, rotating the
// order of the set-ups each round.
func (b *bench) rounds(ctx context.Context) error {
	for r := range b.p.rounds {
		for i := range report.Setups {
			setup := report.Setups[(i+r)%len(report.Setups)]
			if err := b.apply(setup); err != nil {
				return err
			}
			for _, place := range []string{report.Same, report.Cross} {
				if err := ctx.Err(); err != nil {
					return err
				}
				if err := b.verify(ctx, place); err != nil {
					return err
				}
				if err := b.measure(ctx, r, place); err != nil {
					return err
				}
			}
			s, _ := lastLat(b.res.Samples, setup)
			b.logf("round %d/%d %-12s %s", r+1, b.p.rounds, setup, s)
		}
	}
	// The parts after the rounds measure the default daemon.
	return b.daemonMode(false)
}

func lastLat(ss []report.Sample, setup string) (string, bool) {
	var parts []string
	for i := len(ss) - 1; i >= 0 && len(parts) < 2; i-- {
		s := ss[i]
		if s.Setup == setup && s.Test == report.LatFixed1 && s.Lat != nil {
			parts = append(parts, fmt.Sprintf("%s p50 %.0fµs p99 %.0fµs", s.Placement, s.Lat.P50, s.Lat.P99))
		}
	}
	slices.Reverse(parts)
	return strings.Join(parts, ", "), len(parts) > 0
}

// measure runs the tests of one round, set-up and placement.
func (b *bench) measure(ctx context.Context, round int, place string) error {
	addr := b.target(place)
	p := b.p
	dur := func(d time.Duration) string { return d.String() }
	tests := []struct {
		name string
		args []string
		cpu  bool
	}{
		{report.LatFixed1, []string{"lat", "-size", "1", "-rate", fmt.Sprint(p.rate), "-dur", dur(p.fixed)}, true},
		{report.LatFixed1K, []string{"lat", "-size", "1024", "-rate", fmt.Sprint(p.rate), "-dur", dur(p.fixed)}, false},
		{report.LatFull1, []string{"lat", "-size", "1", "-conns", fmt.Sprint(p.fullConns), "-dur", dur(p.full)}, false},
		{report.LatFull1K, []string{"lat", "-size", "1024", "-conns", fmt.Sprint(p.fullConns), "-dur", dur(p.full)}, false},
		{report.ConnRate, []string{"conn", "-dur", dur(p.conn)}, false},
		{report.BulkThrough, []string{"bulk", "-dur", dur(p.bulk)}, false},
	}
	for _, t := range tests {
		pids := b.meshPIDs(place)
		mon := startMonitor(pids)
		out, err := b.client(ctx, append(t.args, "-addr", addr)...)
		cpuS, wall, rss := mon.stop()
		if err != nil {
			return err
		}
		s := report.Sample{Round: round, Setup: b.setup, Placement: place, Test: t.name}
		switch t.args[0] {
		case "lat":
			var lr load.LatencyResult
			if err := json.Unmarshal(out, &lr); err != nil {
				return err
			}
			s.Lat = &lr
		case "conn":
			var cr load.ConnResult
			if err := json.Unmarshal(out, &cr); err != nil {
				return err
			}
			s.Conn = &cr
		case "bulk":
			var br load.BulkResult
			if err := json.Unmarshal(out, &br); err != nil {
				return err
			}
			s.Bulk = &br
		}
		if len(pids) > 0 {
			if t.cpu && wall > 0 {
				v := round3(cpuS / wall * 1000 / p.rate)
				s.CPUPer1000 = &v
			}
			v := round3(rss)
			s.RSSMiB = &v
		}
		b.res.Samples = append(b.res.Samples, s)
	}
	return nil
}

func round3(v float64) float64 { return float64(int64(v*1000+0.5)) / 1000 }
