// Package run drives `make bench`: it builds the lab, switches the same
// pods between the five set-ups (direct, HAProxy sidecars, meshless
// transparent, meshless unix socket, native API), runs bench/cmd/benchapp inside them
// round after round and collects the figures into a report.Results.
package run

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"time"

	"github.com/meshless/meshless/bench/report"
	"github.com/meshless/meshless/internal/lab"
	"github.com/meshless/meshless/internal/redirect"
)

// Config configures Run.
type Config struct {
	// BinDir holds meshlessd, meshless-cni and benchapp; CNIBinDir the
	// reference CNI plugins.
	BinDir, CNIBinDir string
	// OutDir receives the profiles (results are written by the caller).
	OutDir string
	// Quick shortens everything (BENCH_QUICK=1).
	Quick bool
	// Log receives progress lines.
	Log io.Writer
	// Sockmap adds the set-up meshless-sockmap: meshless with the daemons
	// restarted with --sockmap (BENCH_SOCKMAP=1).
	Sockmap bool
	// Only, when not empty, limits the run to these parts: rounds,
	// profile, race, memory, cni.
	Only []string
	// Lab is the main lab's name (DefaultLab when empty; the memory lab's
	// is Lab+"m"). Runs with different names can share the machine; a
	// run removes the leftovers of its own name's crashed run.
	Lab string
}

// DefaultLab is the main lab's name unless Config.Lab says otherwise.
const DefaultLab = "mbench"

// Addresses and ports of the bench.
const (
	appPort  = 8080
	raceVIP  = "198.18.100.20"
	racePort = 80
	hapOut   = 15101
	hapIn    = 15106
	// cniSubnet is where the CNI latency pods get addresses.
	cniSubnet = "198.19.201.0/24"
)

// The main lab's pods: client, same-node server, cross-node server (also
// race instance 1), race instances 2 and 3 (3 is the lossy one).
const (
	client     = "n1/p1"
	sameServer = "n1/p2"
	crossSrv   = "n2/p1"
	race2      = "n2/p2"
	race3      = "n2/p3"
)

var benchPods = []string{client, sameServer, crossSrv, race2, race3}

var serverPods = []string{sameServer, crossSrv, race2, race3}

type params struct {
	rounds                           int
	fixed, full, conn, bulk, profile time.Duration
	rate                             float64
	fullConns, raceConns, raceRounds int
	cniPods, memPods                 int
}

func paramsFor(quick bool) params {
	if quick {
		return params{rounds: 2, fixed: time.Second, full: 500 * time.Millisecond, conn: 500 * time.Millisecond,
			bulk: 500 * time.Millisecond, profile: 4 * time.Second, rate: 1000, fullConns: 2,
			raceConns: 150, raceRounds: 1, cniPods: 30, memPods: 100}
	}
	return params{rounds: 5, fixed: 1500 * time.Millisecond, full: time.Second, conn: time.Second,
		bulk: time.Second, profile: 6 * time.Second, rate: 1000, fullConns: 2,
		raceConns: 300, raceRounds: 3, cniPods: 100, memPods: 100}
}

// bench is one run's state.
type bench struct {
	cfg Config
	// mainName and memName are the labs' names; workRoot holds the bench's
	// own files (meshlet dirs, sockets, HAProxy configs), removed at the
	// end.
	mainName, memName, workRoot string
	p                           params
	res                         *report.Results
	l                           *lab.Lab
	work                        string
	meshlet                     string
	backend                     map[string]redirect.Backend // pod ref -> its meshless rules' backend
	haproxy                     map[string]*exec.Cmd        // pod ref -> its sidecar
	servers                     []*exec.Cmd
	setup                       string
	// sockmapOn: the daemons run with --sockmap now.
	sockmapOn bool
}

func (b *bench) logf(f string, a ...any) {
	fmt.Fprintf(b.cfg.Log, "bench: "+f+"\n", a...)
}

func (b *bench) want(part string) bool {
	return len(b.cfg.Only) == 0 || slices.Contains(b.cfg.Only, part)
}

// Run runs the benchmark. Everything it starts is stopped and every lab
// it makes is removed before it returns, also on error.
func Run(ctx context.Context, cfg Config) (*report.Results, error) {
	if cfg.Log == nil {
		cfg.Log = io.Discard
	}
	start := time.Now()
	p := paramsFor(cfg.Quick)
	if cfg.Lab == "" {
		cfg.Lab = DefaultLab
	}
	b := &bench{cfg: cfg, p: p, backend: map[string]redirect.Backend{}, haproxy: map[string]*exec.Cmd{},
		res:      &report.Results{Verified: map[string]string{}},
		mainName: cfg.Lab, memName: cfg.Lab + "m", workRoot: "/run/meshless-bench-" + cfg.Lab}
	b.res.Machine = machine()
	b.res.Config = report.Config{Quick: cfg.Quick, Rounds: p.rounds, FixedRate: p.rate,
		FixedSeconds: p.fixed.Seconds(), FullSeconds: p.full.Seconds(), FullConns: p.fullConns,
		ConnSeconds: p.conn.Seconds(), BulkSeconds: p.bulk.Seconds(), RaceConns: p.raceConns,
		RaceRounds: p.raceRounds, CNIPods: p.cniPods, MemPods: p.memPods}
	if err := lab.ValidName(b.memName); err != nil {
		return nil, fmt.Errorf("lab name: %w", err)
	}
	for _, bin := range []string{"meshlessd", "meshless-cni", "benchapp"} {
		if _, err := os.Stat(filepath.Join(cfg.BinDir, bin)); err != nil {
			return nil, fmt.Errorf("%s: %w (make build, then go build -o %s/benchapp ./bench/cmd/benchapp)", bin, err, cfg.BinDir)
		}
	}
	if _, err := exec.LookPath("haproxy"); err != nil {
		return nil, fmt.Errorf("haproxy not installed (apt-get install haproxy): %w", err)
	}
	// Leftovers of a crashed run.
	lab.Down(context.WithoutCancel(ctx), b.mainName, "", nil)
	lab.Down(context.WithoutCancel(ctx), b.memName, "", nil)
	os.RemoveAll(b.workRoot)
	defer os.RemoveAll(b.workRoot)

	if cfg.Sockmap && !slices.Contains(report.Setups, report.Sockmap) {
		report.Setups = append(report.Setups, report.Sockmap)
	}
	var errs []string
	if b.want("rounds") || b.want("profile") || b.want("race") {
		if err := b.mainLab(ctx); err != nil {
			errs = append(errs, err.Error())
			b.logf("main lab: %v", err)
		}
	}
	if b.want("memory") || b.want("cni") {
		if err := b.memoryLab(ctx); err != nil {
			errs = append(errs, err.Error())
			b.logf("memory lab: %v", err)
		}
	}
	b.res.Summarize()
	b.res.Evaluate()
	b.res.Missing = append(b.res.Missing, errs...)
	b.res.Seconds = time.Since(start).Round(time.Second).Seconds()
	return b.res, nil
}

// machine describes this machine.
func machine() report.Machine {
	m := report.Machine{Cores: runtime.NumCPU(), GoVersion: runtime.Version(), Date: time.Now().UTC().Format(time.RFC3339)}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = strings.TrimSpace(string(b))
	}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				m.CPU = strings.TrimSpace(v)
				break
			}
		}
	}
	if out, err := exec.Command("haproxy", "-v").Output(); err == nil {
		m.HAProxy = strings.TrimSpace(strings.SplitN(string(out), "\n", 2)[0])
	}
	if out, err := exec.Command("go", "version").Output(); err == nil {
		m.GoVersion = strings.TrimSpace(string(out))
	}
	if out, err := exec.Command("git", "describe", "--always", "--dirty").Output(); err == nil {
		m.Commit = strings.TrimSpace(string(out))
	}
	return m
}
