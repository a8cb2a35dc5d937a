package report

import (
	"fmt"
	"math"
	"path/filepath"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"
)

// Charts writes the PNG charts into dir and returns their file names.
func (r *Results) Charts(dir string) ([]string, error) {
	var files []string
	save := func(p *plot.Plot, name string) error {
		if err := p.Save(8*vg.Inch, 4.5*vg.Inch, filepath.Join(dir, name)); err != nil {
			return fmt.Errorf("chart %s: %w", name, err)
		}
		files = append(files, name)
		return nil
	}
	for _, c := range []struct{ place, file string }{{Same, "latency_same.png"}, {Cross, "latency_cross.png"}} {
		groups := map[string][]float64{}
		for _, setup := range Setups {
			s, _ := r.Get(setup, c.place, LatFixed1)
			k, _ := r.Get(setup, c.place, LatFixed1K)
			groups[setup] = []float64{s.P50, s.P90, s.P99, k.P50, k.P90, k.P99}
		}
		p, err := bars(fmt.Sprintf("%s request/response latency at %.0f req/s", c.place, r.Config.FixedRate), "µs",
			[]string{"1 B p50", "1 B p90", "1 B p99", "1 KiB p50", "1 KiB p90", "1 KiB p99"}, Setups, groups)
		if err != nil {
			return files, err
		}
		if err := save(p, c.file); err != nil {
			return files, err
		}
	}
	for _, c := range []struct{ test, title, unit, file string }{
		{BulkThrough, "single-stream throughput", "Gbit/s", "throughput.png"},
		{ConnRate, "new connections (connect, 1 B request, close)", "connections/s", "connrate.png"},
	} {
		groups := map[string][]float64{}
		for _, setup := range Setups {
			a, _ := r.Get(setup, Same, c.test)
			b, _ := r.Get(setup, Cross, c.test)
			groups[setup] = []float64{a.Rate, b.Rate}
		}
		p, err := bars(c.title, c.unit, []string{Same, Cross}, Setups, groups)
		if err != nil {
			return files, err
		}
		if err := save(p, c.file); err != nil {
			return files, err
		}
	}
	if m := r.Memory; m != nil {
		p, err := bars(fmt.Sprintf("memory for %d pods", m.Pods), "MiB", []string{"memory"},
			[]string{"meshlessd (RSS)", "sidecars (sum RSS)", "sidecars (sum PSS)"},
			map[string][]float64{
				"meshlessd (RSS)":    {m.DaemonRSSAfterMiB},
				"sidecars (sum RSS)": {m.SidecarRSSSumMiB},
				"sidecars (sum PSS)": {m.SidecarPSSSumMiB},
			})
		if err != nil {
			return files, err
		}
		if err := save(p, "memory.png"); err != nil {
			return files, err
		}
	}
	if len(r.RaceSum) > 0 {
		series := []string{"healthy p50", "healthy p99", "lossy p50", "lossy p99"}
		groups := map[string][]float64{}
		var cats []string
		for _, c := range []string{RaceMeshless, RaceFanout1, RaceHAProxy} {
			h, ok1 := r.RaceGet(c, false)
			l, ok2 := r.RaceGet(c, true)
			if !ok1 || !ok2 {
				continue
			}
			cats = append(cats, c)
			for i, v := range []float64{h.P50, h.P99, l.P50, l.P99} {
				groups[series[i]] = append(groups[series[i]], v/1000)
			}
		}
		p, err := bars("connect + first byte to 3 instances (lossy: one drops 50% of SYNs)", "ms (log scale)", cats, series, groups)
		if err != nil {
			return files, err
		}
		p.Y.Scale = clampLog{}
		p.Y.Tick.Marker = plot.LogTicks{Prec: -1}
		p.Y.Min = 0.1
		p.Legend.Left = true
		if err := save(p, "racing.png"); err != nil {
			return files, err
		}
	}
	return files, nil
}

// bars draws one bar per series in each category.
func bars(title, unit string, cats, series []string, values map[string][]float64) (*plot.Plot, error) {
	p := plot.New()
	p.Title.Text = title
	p.Y.Label.Text = unit
	w := vg.Points(float64(60) / float64(len(series)+1) * 1.5)
	if w > 20 {
		w = 20
	}
	for i, s := range series {
		b, err := plotter.NewBarChart(plotter.Values(values[s]), w)
		if err != nil {
			return nil, err
		}
		b.LineStyle.Width = 0
		b.Color = plotutil.Color(i)
		b.Offset = w * vg.Length(float64(i)-float64(len(series)-1)/2)
		p.Add(b)
		p.Legend.Add(s, b)
	}
	p.Legend.Top = true
	p.NominalX(cats...)
	return p, nil
}

// clampLog is a log scale on which bars, which start at 0, start at the
// axis minimum instead.
type clampLog struct{}

func (clampLog) Normalize(min, max, x float64) float64 {
	if min <= 0 {
		min = 0.1
	}
	return plot.LogScale{}.Normalize(min, max, math.Max(x, min))
}
