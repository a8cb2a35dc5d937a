// Package report holds the benchmark's results: their JSON shape, the
// medians over rounds, the targets and the Markdown table and charts.
package report

import (
	"slices"

	"github.com/meshless/meshless/bench/load"
)

// The set-ups, in table order.
const (
	Direct   = "direct"
	Sidecar  = "sidecar"
	Meshless = "meshless"
	UDS      = "meshless-uds"
	// Native is a native client (daemon/native Dial) to a native server
	// (Listen on /meshlet/server/<service>): on the same node the daemon
	// hands the client the server's socket and leaves the byte path,
	// across nodes it relays over the tunnel.
	Native = "native"
	// Sockmap is meshless with meshlessd --sockmap (kernel forwarding);
	// measured only when asked (meshless-bench --sockmap), then appended
	// to Setups.
	Sockmap = "meshless-sockmap"
)

// Setups lists the set-ups in table order.
var Setups = []string{Direct, Sidecar, Meshless, UDS, Native}

// Placements: client and server on the same node or on two nodes.
const (
	Same  = "same-node"
	Cross = "cross-node"
)

// Tests, one per measurement.
const (
	LatFixed1   = "lat_fixed_1B"
	LatFixed1K  = "lat_fixed_1KiB"
	LatFull1    = "lat_full_1B"
	LatFull1K   = "lat_full_1KiB"
	ConnRate    = "conn_rate"
	BulkThrough = "bulk"
)

// Tests lists the tests in table order.
var Tests = []string{LatFixed1, LatFixed1K, LatFull1, LatFull1K, ConnRate, BulkThrough}

// Machine describes where the benchmark ran.
type Machine struct {
	Kernel    string `json:"kernel"`
	CPU       string `json:"cpu_model"`
	Cores     int    `json:"cores"`
	GoVersion string `json:"go_version"`
	HAProxy   string `json:"haproxy_version"`
	Date      string `json:"date"`
	Commit    string `json:"commit"`
}

// Config is how the run was made.
type Config struct {
	Quick        bool    `json:"quick"`
	Rounds       int     `json:"rounds"`
	FixedRate    float64 `json:"fixed_rate_rps"`
	FixedSeconds float64 `json:"fixed_seconds"`
	FullSeconds  float64 `json:"full_speed_seconds"`
	FullConns    int     `json:"full_speed_conns"`
	ConnSeconds  float64 `json:"conn_seconds"`
	BulkSeconds  float64 `json:"bulk_seconds"`
	RaceConns    int     `json:"race_conns"`
	RaceRounds   int     `json:"race_rounds"`
	CNIPods      int     `json:"cni_pods"`
	MemPods      int     `json:"memory_pods"`
}

// Sample is one measurement of one round.
type Sample struct {
	Round     int                 `json:"round"`
	Setup     string              `json:"setup"`
	Placement string              `json:"placement"`
	Test      string              `json:"test"`
	Lat       *load.LatencyResult `json:"latency,omitempty"`
	Conn      *load.ConnResult    `json:"conn,omitempty"`
	Bulk      *load.BulkResult    `json:"bulk,omitempty"`
	// CPUPer1000 is the CPU seconds per second of the mesh's processes
	// (meshlessd, or the HAProxy sidecars of both pods), scaled to 1000
	// req/s; RSSMiB their summed peak VmRSS during the run.
	CPUPer1000 *float64 `json:"cpu_s_per_1000rps,omitempty"`
	RSSMiB     *float64 `json:"rss_mib,omitempty"`
}

// Summary is the median over rounds of one (set-up, placement, test).
type Summary struct {
	Setup     string `json:"setup"`
	Placement string `json:"placement"`
	Test      string `json:"test"`
	Rounds    int    `json:"rounds"`
	// Latency percentiles (µs): request/response for lat_*, connect plus
	// first round trip for conn_rate.
	P50 float64 `json:"p50_us,omitempty"`
	P90 float64 `json:"p90_us,omitempty"`
	P99 float64 `json:"p99_us,omitempty"`
	// Rate: requests/s (lat_*), connections/s (conn_rate), Gbit/s (bulk).
	Rate       float64  `json:"rate"`
	CPUPer1000 *float64 `json:"cpu_s_per_1000rps,omitempty"`
	RSSMiB     *float64 `json:"rss_mib,omitempty"`
}

// RaceSample is one racing measurement: connect + first byte latency to a
// service of three instances on the other node.
type RaceSample struct {
	Round  int             `json:"round"`
	Config string          `json:"config"`
	Lossy  bool            `json:"lossy"`
	Result load.ConnResult `json:"result"`
}

// RaceSummary is the median over rounds of one racing configuration.
type RaceSummary struct {
	Config string  `json:"config"`
	Lossy  bool    `json:"lossy"`
	P50    float64 `json:"p50_us"`
	P99    float64 `json:"p99_us"`
	Errors int     `json:"errors"`
}

// Racing configurations.
const (
	RaceMeshless = "meshless racing (learned stagger)"
	RaceFanout1  = "meshless --race-fanout 1"
	RaceHAProxy  = "sidecar HAProxy roundrobin"
)

// Memory compares one daemon serving Pods pods with Pods sidecars.
type Memory struct {
	Pods int `json:"pods"`
	// DaemonRSSMiB is meshlessd's VmRSS with the pods registered, idle;
	// DaemonRSSAfterMiB after one connection from every pod; DaemonHWMMiB
	// its VmHWM then.
	DaemonRSSMiB      float64 `json:"daemon_rss_mib"`
	DaemonRSSAfterMiB float64 `json:"daemon_rss_after_traffic_mib"`
	DaemonHWMMiB      float64 `json:"daemon_hwm_mib"`
	// Sidecars: the sum over Pods idle HAProxy processes of VmRSS and of
	// Pss (shared library pages counted once overall).
	SidecarRSSSumMiB float64 `json:"sidecars_rss_sum_mib"`
	SidecarPSSSumMiB float64 `json:"sidecars_pss_sum_mib"`
	SidecarOneRSSMiB float64 `json:"sidecar_one_rss_mib"`
}

// CNI is the CNI ADD latency of a pod, with and without meshless-cni.
type CNI struct {
	Pods         int     `json:"pods"`
	WithP50ms    float64 `json:"with_meshless_p50_ms"`
	WithP99ms    float64 `json:"with_meshless_p99_ms"`
	WithoutP50ms float64 `json:"without_meshless_p50_ms"`
	WithoutP99ms float64 `json:"without_meshless_p99_ms"`
	AddedP50ms   float64 `json:"added_p50_ms"`
	AddedP99ms   float64 `json:"added_p99_ms"`
}

// Profile is the CPU profile taken during the biggest gap.
type Profile struct {
	Setup     string   `json:"setup"`
	Placement string   `json:"placement"`
	Test      string   `json:"test"`
	Ratio     float64  `json:"ratio_vs_direct"`
	Files     []string `json:"files"`
	Top       []string `json:"top10"`
}

// Target is one claim's verdict.
type Target struct {
	Name  string `json:"name"`
	Want  string `json:"want"`
	Got   string `json:"got"`
	Met   bool   `json:"met"`
	Known bool   `json:"known"`
}

// Results is everything results.json holds.
type Results struct {
	Machine  Machine           `json:"machine"`
	Config   Config            `json:"config"`
	Samples  []Sample          `json:"samples"`
	Summary  []Summary         `json:"summary"`
	Verified map[string]string `json:"path_verified"`
	Race     []RaceSample      `json:"race_samples"`
	RaceSum  []RaceSummary     `json:"race_summary"`
	Memory   *Memory           `json:"memory,omitempty"`
	CNI      *CNI              `json:"cni,omitempty"`
	Profile  *Profile          `json:"profile,omitempty"`
	Targets  []Target          `json:"targets"`
	Missing  []string          `json:"missing,omitempty"`
	Seconds  float64           `json:"total_seconds"`
}

// Summarize fills r.Summary and r.RaceSum with the medians over rounds.
func (r *Results) Summarize() {
	type key struct{ s, p, t string }
	groups := map[key][]Sample{}
	var keys []key
	for _, s := range r.Samples {
		k := key{s.Setup, s.Placement, s.Test}
		if _, ok := groups[k]; !ok {
			keys = append(keys, k)
		}
		groups[k] = append(groups[k], s)
	}
	r.Summary = nil
	for _, k := range keys {
		ss := groups[k]
		var p50, p90, p99, rate, cpu, rss []float64
		for _, s := range ss {
			switch {
			case s.Lat != nil:
				p50, p90, p99 = append(p50, s.Lat.P50), append(p90, s.Lat.P90), append(p99, s.Lat.P99)
				rate = append(rate, s.Lat.Achieved)
			case s.Conn != nil:
				p50, p90, p99 = append(p50, s.Conn.P50), append(p90, s.Conn.P90), append(p99, s.Conn.P99)
				rate = append(rate, s.Conn.Rate)
			case s.Bulk != nil:
				rate = append(rate, s.Bulk.Gbps)
			}
			if s.CPUPer1000 != nil {
				cpu = append(cpu, *s.CPUPer1000)
			}
			if s.RSSMiB != nil {
				rss = append(rss, *s.RSSMiB)
			}
		}
		sum := Summary{Setup: k.s, Placement: k.p, Test: k.t, Rounds: len(ss),
			P50: load.Median(p50), P90: load.Median(p90), P99: load.Median(p99), Rate: load.Median(rate)}
		if len(cpu) > 0 {
			v := load.Median(cpu)
			sum.CPUPer1000 = &v
		}
		if len(rss) > 0 {
			v := load.Median(rss)
			sum.RSSMiB = &v
		}
		r.Summary = append(r.Summary, sum)
	}
	slices.SortStableFunc(r.Summary, func(a, b Summary) int {
		if c := index([]string{Same, Cross}, a.Placement) - index([]string{Same, Cross}, b.Placement); c != 0 {
			return c
		}
		if c := index(Tests, a.Test) - index(Tests, b.Test); c != 0 {
			return c
		}
		return index(Setups, a.Setup) - index(Setups, b.Setup)
	})
	type rkey struct {
		c string
		l bool
	}
	rg := map[rkey][]RaceSample{}
	var rkeys []rkey
	for _, s := range r.Race {
		k := rkey{s.Config, s.Lossy}
		if _, ok := rg[k]; !ok {
			rkeys = append(rkeys, k)
		}
		rg[k] = append(rg[k], s)
	}
	r.RaceSum = nil
	for _, k := range rkeys {
		var p50, p99 []float64
		errs := 0
		for _, s := range rg[k] {
			p50, p99 = append(p50, s.Result.P50), append(p99, s.Result.P99)
			errs += s.Result.Errors
		}
		r.RaceSum = append(r.RaceSum, RaceSummary{Config: k.c, Lossy: k.l, P50: load.Median(p50), P99: load.Median(p99), Errors: errs})
	}
}

func index(list []string, s string) int {
	if i := slices.Index(list, s); i >= 0 {
		return i
	}
	return len(list)
}

// Get returns the summary of (setup, placement, test).
func (r *Results) Get(setup, placement, test string) (Summary, bool) {
	for _, s := range r.Summary {
		if s.Setup == setup && s.Placement == placement && s.Test == test {
			return s, true
		}
	}
	return Summary{}, false
}

// Race returns the racing summary of config.
func (r *Results) RaceGet(config string, lossy bool) (RaceSummary, bool) {
	for _, s := range r.RaceSum {
		if s.Config == config && s.Lossy == lossy {
			return s, true
		}
	}
	return RaceSummary{}, false
}
