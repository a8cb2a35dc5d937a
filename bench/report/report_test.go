package report

import (
	"os"
	"strings"
	"testing"

	"github.com/meshless/meshless/bench/load"
)

func TestSummarizeEvaluateRender(t *testing.T) {
	r := &Results{Config: Config{Rounds: 3, FixedRate: 1000}}
	for round := range 3 {
		for i, setup := range Setups {
			for _, place := range []string{Same, Cross} {
				base := float64(100 * (i + 1))
				r.Samples = append(r.Samples,
					Sample{Round: round, Setup: setup, Placement: place, Test: LatFixed1,
						Lat: &load.LatencyResult{Percentiles: load.Percentiles{P50: base + float64(round), P90: base * 2, P99: base * 3}, Achieved: 1000}},
					Sample{Round: round, Setup: setup, Placement: place, Test: BulkThrough, Bulk: &load.BulkResult{Gbps: 10 / float64(i+1)}},
					Sample{Round: round, Setup: setup, Placement: place, Test: ConnRate, Conn: &load.ConnResult{Rate: 1000 / float64(i+1)}})
			}
		}
	}
	r.Race = []RaceSample{{Config: RaceMeshless, Result: load.ConnResult{Percentiles: load.Percentiles{P50: 100, P99: 200}}},
		{Config: RaceMeshless, Lossy: true, Result: load.ConnResult{Percentiles: load.Percentiles{P50: 100, P99: 220}}}}
	r.Memory = &Memory{Pods: 100, DaemonRSSAfterMiB: 20, SidecarRSSSumMiB: 1000, SidecarPSSSumMiB: 500}
	r.Summarize()
	s, ok := r.Get(Meshless, Same, LatFixed1)
	if !ok || s.P50 != 301 || s.Rounds != 3 {
		t.Fatalf("summary %+v %v", s, ok)
	}
	r.Evaluate()
	met := map[string]bool{}
	for _, tg := range r.Targets {
		met[tg.Name] = tg.Met
	}
	if met["meshless same-node p50 (lat_fixed_1B) ≤ direct"] {
		t.Error("3× direct latency met the target")
	}
	if !met["racing: p99 connect with a 50%-SYN-loss instance within 20% of all healthy"] {
		t.Error("1.1× racing not met")
	}
	if met["one daemon serving 100 pods vs 100 sidecars (RSS)"] {
		t.Error("2% memory met the 1% target")
	}
	md := r.Markdown()
	if !strings.Contains(md, "| lat_fixed_1B | meshless | 301 |") {
		t.Errorf("markdown:\n%s", md)
	}
	dir := t.TempDir()
	files, err := r.Charts(dir)
	if err != nil || len(files) != 6 {
		t.Fatalf("charts %v %v", files, err)
	}
	if st, err := os.Stat(dir + "/memory.png"); err != nil || st.Size() == 0 {
		t.Fatal("no memory chart")
	}
}
