package run

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/meshless/meshless/bench/load"
	"github.com/meshless/meshless/bench/report"
)

// racing measures connect + first byte to the race service (three
// instances on n2) with all healthy and with n2/p3 dropping half its
// SYNs: meshless racing as by default (learned order, adaptive stagger),
// meshless with --race-fanout 1 --race-stagger 0 (one instance at a time,
// in random order: no racing, no learning) and HAProxy sidecars balancing
// round robin with their default connect retry.
func (b *bench) racing(ctx context.Context) error {
	n1 := "n1"
	defer func() {
		// Back to the lab's flags, and no loss.
		nftIn(b.l, race3, "table inet benchloss\ndelete table inet benchloss\n")
		b.l.RestartDaemonWith(context.WithoutCancel(ctx), n1, []string{"--pprof", "--meshlet-dir", b.meshlet})
	}()
	addr := fmt.Sprintf("%s:%d", raceVIP, racePort)
	for r := range b.p.raceRounds {
		for _, c := range []struct {
			name  string
			setup string
			flags []string
		}{
			{report.RaceMeshless, report.Meshless, []string{"--pprof", "--meshlet-dir", b.meshlet}},
			{report.RaceFanout1, report.Meshless, []string{"--pprof", "--meshlet-dir", b.meshlet, "--race-fanout", "1", "--race-stagger", "0"}},
			{report.RaceHAProxy, report.Sidecar, nil},
		} {
			if c.flags != nil {
				if err := b.l.RestartDaemonWith(ctx, n1, c.flags); err != nil {
					return err
				}
				if err := b.waitRoutes(ctx); err != nil {
					return err
				}
			}
			if err := b.apply(c.setup); err != nil {
				return err
			}
			for _, lossy := range []bool{false, true} {
				script := "table inet benchloss\ndelete table inet benchloss\n"
				if lossy {
					script += fmt.Sprintf(lossRules, appPort)
				}
				if err := nftIn(b.l, race3, script); err != nil {
					return err
				}
				// Warm up (daemon tunnels, HAProxy), unmeasured.
				if _, err := b.client(ctx, "conn", "-addr", addr, "-count", "6", "-c", "1"); err != nil {
					return fmt.Errorf("%s warm-up: %w", c.name, err)
				}
				out, err := b.client(ctx, "conn", "-addr", addr, "-count", fmt.Sprint(b.p.raceConns), "-c", "4")
				if err != nil {
					return fmt.Errorf("%s: %w", c.name, err)
				}
				var cr load.ConnResult
				if err := json.Unmarshal(out, &cr); err != nil {
					return err
				}
				b.res.Race = append(b.res.Race, report.RaceSample{Round: r, Config: c.name, Lossy: lossy, Result: cr})
				b.logf("race round %d %-30s lossy=%-5v p50 %.0fµs p99 %.0fµs errors %d", r+1, c.name, lossy, cr.P50, cr.P99, cr.Errors)
			}
		}
	}
	return nil
}
