package run

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/meshless/meshless/bench/report"
)

// gap returns the meshless measurement furthest from direct: the ratio of
// p50 latency, or the inverse ratio of a rate.
func gap(r *report.Results) (report.Summary, float64) {
	var worst report.Summary
	ratio := 0.0
	for _, s := range r.Summary {
		if s.Setup != report.Meshless && s.Setup != report.UDS {
			continue
		}
		d, ok := r.Get(report.Direct, s.Placement, s.Test)
		if !ok {
			continue
		}
		var v float64
		switch s.Test {
		case report.ConnRate, report.BulkThrough:
			if s.Rate > 0 {
				v = d.Rate / s.Rate
			}
		default:
			if d.P50 > 0 {
				v = s.P50 / d.P50
			}
		}
		if v > ratio {
			worst, ratio = s, v
		}
	}
	return worst, ratio
}

// profile re-runs the biggest gap while taking CPU profiles of the
// daemons involved (meshlessd --pprof), and keeps their top 10.
func (b *bench) profile(ctx context.Context) error {
	g, ratio := gap(b.res)
	if g.Setup == "" {
		return fmt.Errorf("no measurements to pick the biggest gap from")
	}
	if err := b.apply(g.Setup); err != nil {
		return err
	}
	b.logf("profiling %s %s %s (%.2fx direct) for %v", g.Setup, g.Placement, g.Test, ratio, b.p.profile)
	args := map[string][]string{
		report.LatFixed1:   {"lat", "-size", "1", "-rate", fmt.Sprint(b.p.rate)},
		report.LatFixed1K:  {"lat", "-size", "1024", "-rate", fmt.Sprint(b.p.rate)},
		report.LatFull1:    {"lat", "-size", "1", "-conns", fmt.Sprint(b.p.fullConns)},
		report.LatFull1K:   {"lat", "-size", "1024", "-conns", fmt.Sprint(b.p.fullConns)},
		report.ConnRate:    {"conn"},
		report.BulkThrough: {"bulk"},
	}[g.Test]
	runFor := b.p.profile + 1500*time.Millisecond
	args = append(args, "-dur", runFor.String(), "-addr", b.target(g.Placement))
	nodes := []int{1}
	if g.Placement == report.Cross {
		nodes = append(nodes, 2)
	}
	prof := &report.Profile{Setup: g.Setup, Placement: g.Placement, Test: g.Test, Ratio: round3(ratio)}
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		errs []string
	)
	wg.Add(1)
	go func() {
		defer wg.Done()
		if _, err := b.client(ctx, args...); err != nil {
			mu.Lock()
			errs = append(errs, err.Error())
			mu.Unlock()
		}
	}()
	time.Sleep(500 * time.Millisecond)
	for _, i := range nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			n, _ := b.l.Node(i)
			pctx, cancel := context.WithTimeout(ctx, b.p.profile+30*time.Second)
			defer cancel()
			code, body, err := n.Get(pctx, fmt.Sprintf("/debug/pprof/profile?seconds=%d", int(b.p.profile.Seconds())))
			mu.Lock()
			defer mu.Unlock()
			if err != nil || code != http.StatusOK {
				errs = append(errs, fmt.Sprintf("profile %s: %d %v", n.Name, code, err))
				return
			}
			name := fmt.Sprintf("meshlessd-%s.cpu.pprof", n.Name)
			if err := os.WriteFile(filepath.Join(b.cfg.OutDir, name), []byte(body), 0o644); err != nil {
				errs = append(errs, err.Error())
				return
			}
			prof.Files = append(prof.Files, name)
		}()
	}
	wg.Wait()
	if len(errs) > 0 {
		return fmt.Errorf("%s", strings.Join(errs, "; "))
	}
	for _, f := range prof.Files {
		top, err := pprofTop(filepath.Join(b.cfg.OutDir, f), filepath.Join(b.cfg.BinDir, "meshlessd"))
		if err != nil {
			return err
		}
		prof.Top = append(prof.Top, f+":")
		prof.Top = append(prof.Top, top...)
	}
	b.res.Profile = prof
	return nil
}

// pprofTop returns the header and the top 10 lines of go tool pprof -top.
func pprofTop(file, bin string) ([]string, error) {
	out, err := exec.Command("go", "tool", "pprof", "-top", "-nodecount=10", bin, file).CombinedOutput()
	if err != nil {
		return nil, fmt.Errorf("go tool pprof: %w: %s", err, out)
	}
	var lines []string
	take := false
	for _, l := range strings.Split(strings.TrimRight(string(out), "\n"), "\n") {
		if strings.HasPrefix(l, "Showing nodes") || strings.HasPrefix(l, "Duration:") {
			lines = append(lines, l)
		}
		if strings.Contains(l, "flat%") {
			take = true
		}
		if take {
			lines = append(lines, l)
		}
	}
	return lines, nil
}
