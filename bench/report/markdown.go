package report

import (
	"fmt"
	"strings"
)

// Markdown renders results.md.
func (r *Results) Markdown() string {
	var b strings.Builder
	w := func(f string, a ...any) { fmt.Fprintf(&b, f, a...) }
	m := r.Machine
	mode := "full"
	if r.Config.Quick {
		mode = "quick (BENCH_QUICK=1)"
	}
	w("# Meshless benchmarks\n\n")
	w("Run %s, %s mode, %d rounds interleaved (medians over rounds), %.0f s in all. Machine: %s, %d cores, kernel %s, %s, %s, commit %s.\n\n",
		m.Date, mode, r.Config.Rounds, r.Seconds, m.CPU, m.Cores, m.Kernel, m.GoVersion, m.HAProxy, m.Commit)
	w("Set-ups over the same lab pods: **direct** (no mesh), **sidecar** (HAProxy in each pod behind in-pod iptables-style REDIRECT, outbound and inbound: 6 stack traversals), **meshless** (transparent redirection to meshlessd), **meshless-uds** (the server pod also serves the native unix socket), **native** (a native client, `native.Dial`, to a native server, `native.Listen`, over the pods' /meshlet unix sockets: on the same node the daemon hands the client the server's socket and leaves the byte path; across nodes it relays through the tunnel).\n\n")

	w("## Targets\n\n| Claim | Want | Got | Verdict |\n|---|---|---|---|\n")
	for _, t := range r.Targets {
		v := "not met"
		switch {
		case !t.Known:
			v = "missing"
		case t.Met:
			v = "**met**"
		}
		w("| %s | %s | %s | %s |\n", t.Name, t.Want, t.Got, v)
	}
	w("\n")

	for _, place := range []string{Same, Cross} {
		w("## %s\n\n", place)
		w("Latency in µs (p50 / p90 / p99), rate in req/s, conn/s or Gbit/s. Ratios are set-up÷direct and set-up÷sidecar on p50 / p99 (latency) or on the rate.\n\n")
		w("| Test | Set-up | p50 | p90 | p99 | Rate | CPU s per 1000 req/s | RSS MiB | ÷direct | ÷sidecar |\n|---|---|---|---|---|---|---|---|---|---|\n")
		for _, test := range Tests {
			d, _ := r.Get(Direct, place, test)
			sc, _ := r.Get(Sidecar, place, test)
			for _, setup := range Setups {
				s, ok := r.Get(setup, place, test)
				if !ok {
					continue
				}
				lat := test != BulkThrough
				row := fmt.Sprintf("| %s | %s | %s | %s | %s | %s | %s | %s |", test, setup,
					num(s.P50, lat), num(s.P90, lat), num(s.P99, lat), rateStr(s.Rate, test), ptr(s.CPUPer1000, "%.3f"), ptr(s.RSSMiB, "%.1f"))
				rd, rs := "", ""
				if setup == Meshless || setup == UDS || setup == Sockmap || setup == Native {
					rd, rs = ratios(s, d, lat), ratios(s, sc, lat)
				}
				w("%s %s | %s |\n", row, rd, rs)
			}
		}
		w("\n")
	}

	w("## Racing\n\nThree instances of a service on the other node; in the lossy case one drops 50%% of SYNs to the app (nft `numgen random mod 2`). Connect + first 1-byte round trip, µs, median over rounds.\n\n")
	w("| Balancing | Instances | p50 | p99 | errors |\n|---|---|---|---|---|\n")
	for _, s := range r.RaceSum {
		inst := "3 healthy"
		if s.Lossy {
			inst = "1 of 3 lossy"
		}
		w("| %s | %s | %.0f | %.0f | %d |\n", s.Config, inst, s.P50, s.P99, s.Errors)
	}
	w("\n")
	if mm := r.Memory; mm != nil {
		w("## Memory: one daemon vs %d sidecars\n\n", mm.Pods)
		w("| | MiB |\n|---|---|\n")
		w("| meshlessd, %d pods registered, idle (VmRSS) | %.1f |\n", mm.Pods, mm.DaemonRSSMiB)
		w("| meshlessd after one connection from every pod (VmRSS) | %.1f |\n", mm.DaemonRSSAfterMiB)
		w("| meshlessd peak (VmHWM) | %.1f |\n", mm.DaemonHWMMiB)
		w("| one HAProxy sidecar, idle (VmRSS) | %.1f |\n", mm.SidecarOneRSSMiB)
		w("| %d HAProxy sidecars, sum of VmRSS | %.1f |\n", mm.Pods, mm.SidecarRSSSumMiB)
		w("| %d HAProxy sidecars, sum of Pss (shared pages split) | %.1f |\n\n", mm.Pods, mm.SidecarPSSSumMiB)
	}
	if c := r.CNI; c != nil {
		w("## CNI ADD latency (%d pods each, interleaved)\n\n", c.Pods)
		w("| Chain | p50 ms | p99 ms |\n|---|---|---|\n")
		w("| loopback + bridge + host-local | %.1f | %.1f |\n", c.WithoutP50ms, c.WithoutP99ms)
		w("| ... + meshless-cni | %.1f | %.1f |\n", c.WithP50ms, c.WithP99ms)
		w("| added by meshless-cni | %.1f | %.1f |\n\n", c.AddedP50ms, c.AddedP99ms)
	}
	if p := r.Profile; p != nil {
		w("## CPU profile of the biggest gap\n\n%s, %s, %s: %.2f× direct. Profiles: %s (`go tool pprof -top bin/meshlessd <file>`).\n\n```\n%s\n```\n\n",
			p.Setup, p.Placement, p.Test, p.Ratio, strings.Join(p.Files, ", "), strings.Join(p.Top, "\n"))
	}
	if len(r.Verified) > 0 {
		w("## Path checks\n\nBefore measuring, a probe connection per set-up checked the daemons' counters:\n\n")
		for _, k := range sortedKeys(r.Verified) {
			w("- %s: %s\n", k, r.Verified[k])
		}
		w("\n")
	}
	if len(r.Missing) > 0 {
		w("## Missing\n\n")
		for _, s := range r.Missing {
			w("- %s\n", s)
		}
		w("\n")
	}
	w("Charts: ![same-node latency](latency_same.png) ![cross-node latency](latency_cross.png) ![throughput](throughput.png) ![connections](connrate.png) ![memory](memory.png) ![racing](racing.png)\n")
	return b.String()
}

func num(v float64, show bool) string {
	if !show {
		return ""
	}
	return fmt.Sprintf("%.0f", v)
}

func rateStr(v float64, test string) string {
	if test == BulkThrough {
		return fmt.Sprintf("%.2f Gbit/s", v)
	}
	return fmt.Sprintf("%.0f", v)
}

func ptr(v *float64, f string) string {
	if v == nil {
		return ""
	}
	return fmt.Sprintf(f, *v)
}

func ratios(s, base Summary, lat bool) string {
	if base.Setup == "" {
		return ""
	}
	if lat && base.P50 > 0 && base.P99 > 0 && s.Test != ConnRate {
		return fmt.Sprintf("%.2f / %.2f", s.P50/base.P50, s.P99/base.P99)
	}
	if base.Rate > 0 {
		return fmt.Sprintf("%.2f", s.Rate/base.Rate)
	}
	return ""
}

func sortedKeys(m map[string]string) []string {
	var ks []string
	for k := range m {
		ks = append(ks, k)
	}
	for i := range ks {
		for j := i + 1; j < len(ks); j++ {
			if ks[j] < ks[i] {
				ks[i], ks[j] = ks[j], ks[i]
			}
		}
	}
	return ks
}
