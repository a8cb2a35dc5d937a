// Package run drives `make bench`: it builds the lab, switches the same
// pods between the four set-ups (direct, HAProxy sidecars, meshless
// transparent, meshless unix socket), runs bench/cmd/benchapp inside them
// round after round and collects the figures into a report.Results.
package run

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"time"

	"github.com/meshless/meshless/bench/load"
	"github.com/meshless/meshless/bench/report"
	"github.com/meshless/meshless/daemon/cniapi"
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
}

// Lab names: fixed, so that a run that crashed is cleaned by the next.
const (
	mainLab = "mbench"
	memLab  = "mbenchm"
	// workRoot holds the bench's own files (meshlet dirs, sockets,
	// HAProxy configs), removed at the end.
	workRoot = "/run/meshless-bench"
)

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
	cfg     Config
	p       params
	res     *report.Results
	l       *lab.Lab
	work    string
	meshlet string
	backend map[string]redirect.Backend // pod ref -> its meshless rules' backend
	haproxy map[string]*exec.Cmd        // pod ref -> its sidecar
	servers []*exec.Cmd
	setup   string
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
	b := &bench{cfg: cfg, p: p, backend: map[string]redirect.Backend{}, haproxy: map[string]*exec.Cmd{},
		res: &report.Results{Verified: map[string]string{}}}
	b.res.Machine = machine()
	b.res.Config = report.Config{Quick: cfg.Quick, Rounds: p.rounds, FixedRate: p.rate,
		FixedSeconds: p.fixed.Seconds(), FullSeconds: p.full.Seconds(), FullConns: p.fullConns,
		ConnSeconds: p.conn.Seconds(), BulkSeconds: p.bulk.Seconds(), RaceConns: p.raceConns,
		RaceRounds: p.raceRounds, CNIPods: p.cniPods, MemPods: p.memPods}
	for _, bin := range []string{"meshlessd", "meshless-cni", "benchapp"} {
		if _, err := os.Stat(filepath.Join(cfg.BinDir, bin)); err != nil {
			return nil, fmt.Errorf("%s: %w (make build, then go build -o %s/benchapp ./bench/cmd/benchapp)", bin, err, cfg.BinDir)
		}
	}
	if _, err := exec.LookPath("haproxy"); err != nil {
		return nil, fmt.Errorf("haproxy not installed (apt-get install haproxy): %w", err)
	}
	// Leftovers of a crashed run.
	lab.Down(context.WithoutCancel(ctx), mainLab, "", nil)
	lab.Down(context.WithoutCancel(ctx), memLab, "", nil)
	os.RemoveAll(workRoot)
	defer os.RemoveAll(workRoot)

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

// mainLab runs the rounds, the profile and the racing on a 2-node lab.
func (b *bench) mainLab(ctx context.Context) (err error) {
	b.work = filepath.Join(workRoot, mainLab)
	b.meshlet = filepath.Join(b.work, "meshlet")
	for _, d := range []string{b.meshlet, filepath.Join(b.work, "sock")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
	}
	b.logf("lab %s: 2 nodes x 3 pods", mainLab)
	l, err := lab.Up(ctx, lab.Options{Name: mainLab, Nodes: 2, Pods: 3, BinDir: b.cfg.BinDir, CNIBinDir: b.cfg.CNIBinDir,
		DaemonArgs: b.daemonArgs()})
	if err != nil {
		return err
	}
	b.l = l
	defer func() {
		b.stopAll()
		if derr := l.Down(context.WithoutCancel(ctx)); derr != nil && err == nil {
			err = derr
		}
		b.l = nil
	}()
	if err := limitTimeWait(l); err != nil {
		return err
	}
	if err := b.writeRegistry(ctx); err != nil {
		return err
	}
	if err := b.findBackends(); err != nil {
		return err
	}
	for _, ref := range serverPods {
		pod, _ := l.Pod(ref)
		cmd := exec.Command(filepath.Join(b.cfg.BinDir, "benchapp"), "server",
			"-tcp", fmt.Sprintf("0.0.0.0:%d", appPort), "-unix", b.privSocket(pod))
		cmd.Stderr = os.Stderr
		if err := l.Start(ref, cmd); err != nil {
			return err
		}
		b.servers = append(b.servers, cmd)
	}
	for _, ref := range benchPods {
		if err := b.startHAProxy(b.l, ref); err != nil {
			return err
		}
	}
	if err := b.waitServers(ctx); err != nil {
		return err
	}
	b.setup = report.Meshless
	if b.want("rounds") {
		if err := b.rounds(ctx); err != nil {
			return err
		}
	}
	if b.want("profile") {
		b.res.Summarize()
		if err := b.profile(ctx); err != nil {
			b.res.Missing = append(b.res.Missing, "profile: "+err.Error())
			b.logf("profile: %v", err)
		}
	}
	if b.want("race") {
		if err := b.racing(ctx); err != nil {
			b.res.Missing = append(b.res.Missing, "racing: "+err.Error())
			b.logf("racing: %v", err)
		}
	}
	return nil
}

// stopAll kills the processes the bench started (by their PIDs).
func (b *bench) stopAll() {
	for _, c := range b.servers {
		stop(c)
	}
	b.servers = nil
	for ref, c := range b.haproxy {
		stop(c)
		delete(b.haproxy, ref)
	}
}

func stop(c *exec.Cmd) {
	if c == nil || c.Process == nil {
		return
	}
	c.Process.Kill()
	c.Wait()
}

// writeRegistry adds the race service to the lab's registry and waits
// until both daemons route it.
func (b *bench) writeRegistry(ctx context.Context) error {
	var buf bytes.Buffer
	buf.WriteString("nodes:\n")
	for _, n := range b.l.Nodes() {
		fmt.Fprintf(&buf, "  - {name: %s, address: %s, podCIDRs: [%s]}\n", n.Name, n.Address, n.PodCIDR)
	}
	buf.WriteString("services:\n")
	svc := func(name, vip string, port int, refs ...string) {
		fmt.Fprintf(&buf, "  - namespace: default\n    name: %s\n    vips: [%s]\n    ports:\n      - {name: tcp, port: %d, targetPort: %d, protocol: TCP}\n    endpoints:\n",
			name, vip, port, appPort)
		for _, r := range refs {
			p, _ := b.l.Pod(r)
			fmt.Fprintf(&buf, "      - {ip: %s, node: %s}\n", p.IP, p.Node)
		}
	}
	svc(lab.ServiceName, lab.ServiceVIP, lab.ServicePort, "n1/p1", "n2/p1")
	svc("race", raceVIP, racePort, crossSrv, race2, race3)
	tmp := b.l.Registry() + ".tmp"
	if err := os.WriteFile(tmp, buf.Bytes(), 0o644); err != nil {
		return err
	}
	if err := os.Rename(tmp, b.l.Registry()); err != nil {
		return err
	}
	return b.waitRoutes(ctx)
}

func (b *bench) waitRoutes(ctx context.Context) error {
	for _, n := range b.l.Nodes() {
		deadline := time.Now().Add(15 * time.Second)
		for {
			st, err := cniapi.NewClient(n.Socket).Status(ctx)
			if err == nil && len(st.Services) == 2 {
				break
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("daemon %s does not route the race service: %v", n.Name, err)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	return nil
}

// findBackends records which rule backend meshless-cni used in each pod,
// so the meshless rules can be removed and put back as they were.
func (b *bench) findBackends() error {
	spec := meshSpec()
	for _, ref := range benchPods {
		var found redirect.Backend
		for _, mode := range []redirect.Mode{redirect.ModeNFTables, redirect.ModeIPTables} {
			be, err := redirect.New(mode, redirect.WithHost(redirect.Detection{}))
			if err != nil {
				continue
			}
			if b.l.InPod(ref, func() error { return be.Check(spec) }) == nil {
				found = be
				break
			}
		}
		if found == nil {
			return fmt.Errorf("pod %s: meshless rules not found by either backend", ref)
		}
		b.backend[ref] = found
	}
	return nil
}

func meshSpec() redirect.Spec {
	s := redirect.DefaultSpec()
	s.IPv4 = true
	return s
}

func (b *bench) privSocket(p lab.Pod) string {
	return filepath.Join(b.work, "sock", p.Name+".sock")
}

func (b *bench) udsLink(p lab.Pod) string {
	return filepath.Join(b.meshlet, "default", p.Name, "server", fmt.Sprint(appPort))
}

// waitServers waits until every server's unix socket exists.
func (b *bench) waitServers(ctx context.Context) error {
	deadline := time.Now().Add(10 * time.Second)
	for _, ref := range serverPods {
		p, _ := b.l.Pod(ref)
		for {
			if _, err := os.Stat(b.privSocket(p)); err == nil {
				break
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("server in %s did not start", ref)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	return nil
}

// haproxyConfig is a sidecar's configuration: outbound listener to the
// original destination (or the race service's balancer), inbound listener
// to the app on 127.0.0.1.
func (b *bench) haproxyConfig() string {
	var race strings.Builder
	for i, ref := range []string{crossSrv, race2, race3} {
		p, _ := b.l.Pod(ref)
		fmt.Fprintf(&race, "    server r%d %s:%d\n", i+1, p.IP, appPort)
	}
	return haproxyDefaults + fmt.Sprintf(`frontend out
    bind 0.0.0.0:%d
    use_backend race if { dst %s }
    default_backend orig
backend orig
    # 0.0.0.0 and no port: the original destination (SO_ORIGINAL_DST).
    server orig 0.0.0.0
backend race
    balance roundrobin
%sfrontend in
    bind 0.0.0.0:%d
    default_backend local
backend local
    server app 127.0.0.1:%d
`, hapOut, raceVIP, race.String(), hapIn, appPort)
}

// sidecarRules redirect the pod's TCP like a sidecar mesh's init
// container does: outbound (but HAProxy's own, uid 65534, and loopback)
// to the outbound listener, inbound to the app port to the inbound one.
const sidecarRules = `table ip benchsidecar {
  chain out {
    type nat hook output priority -100; policy accept;
    meta skuid 65534 return
    ip daddr 127.0.0.0/8 return
    meta l4proto tcp redirect to :%d
  }
  chain in {
    type nat hook prerouting priority -100; policy accept;
    tcp dport %d redirect to :%d
  }
}
`

// lossRules drop half the SYNs to the app port, before any NAT.
const lossRules = `table inet benchloss {
  chain pre {
    type filter hook prerouting priority -300; policy accept;
    tcp dport %d tcp flags & (syn | ack) == syn numgen random mod 2 == 0 drop
  }
}
`

func (b *bench) startHAProxy(l *lab.Lab, ref string) error {
	cfgPath := filepath.Join(workRoot, l.Name(), "haproxy", strings.ReplaceAll(ref, "/", "-")+".cfg")
	if err := os.MkdirAll(filepath.Dir(cfgPath), 0o755); err != nil {
		return err
	}
	conf := b.sidecarConfigFor(l)
	if err := os.WriteFile(cfgPath, []byte(conf), 0o644); err != nil {
		return err
	}
	cmd := exec.Command("haproxy", "-db", "-f", cfgPath)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := l.Start(ref, cmd); err != nil {
		return err
	}
	b.haproxy[ref] = cmd
	time.Sleep(50 * time.Millisecond)
	if !alive(cmd.Process.Pid) {
		cmd.Wait()
		return fmt.Errorf("haproxy in %s exited: %s", ref, stderr.String())
	}
	return nil
}

func (b *bench) sidecarConfigFor(l *lab.Lab) string {
	if l == b.l {
		return b.haproxyConfig()
	}
	// The memory lab's sidecars: the same shape, no race service.
	return b.haproxyConfigNoRace()
}

// haproxyDefaults opens every sidecar's configuration.
const haproxyDefaults = `global
    uid 65534
    gid 65534
    maxconn 4000
defaults
    mode tcp
    timeout connect 5s
    timeout client 60s
    timeout server 60s
    retries 3
`

func (b *bench) haproxyConfigNoRace() string {
	return haproxyDefaults + fmt.Sprintf(`frontend out
    bind 0.0.0.0:%d
    default_backend orig
backend orig
    server orig 0.0.0.0
frontend in
    bind 0.0.0.0:%d
    default_backend local
backend local
    server app 127.0.0.1:%d
`, hapOut, hapIn, appPort)
}

// nftIn runs nft -f - with script inside the pod.
func nftIn(l *lab.Lab, ref, script string) error {
	cmd := exec.Command("nft", "-f", "-")
	cmd.Stdin = strings.NewReader(script)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := l.Run(ref, cmd); err != nil {
		return fmt.Errorf("nft in %s: %w: %s", ref, err, out.String())
	}
	return nil
}

// apply switches the bench pods to setup.
func (b *bench) apply(setup string) error {
	if err := b.daemonMode(setup == report.Sockmap); err != nil {
		return err
	}
	spec := meshSpec()
	for _, ref := range benchPods {
		mesh := setup == report.Meshless || setup == report.UDS || setup == report.Sockmap
		be := b.backend[ref]
		err := b.l.InPod(ref, func() error {
			if mesh {
				return be.Apply(spec)
			}
			return be.Remove()
		})
		if err != nil {
			return fmt.Errorf("%s rules in %s: %w", setup, ref, err)
		}
		script := "table ip benchsidecar\ndelete table ip benchsidecar\n"
		if setup == report.Sidecar {
			script += fmt.Sprintf(sidecarRules, hapOut, appPort, hapIn)
		}
		if err := nftIn(b.l, ref, script); err != nil {
			return err
		}
		p, _ := b.l.Pod(ref)
		link := b.udsLink(p)
		os.Remove(link)
		if setup == report.UDS && slices.Contains(serverPods, ref) {
			if err := os.MkdirAll(filepath.Dir(link), 0o755); err != nil {
				return err
			}
			if err := os.Symlink(b.privSocket(p), link); err != nil {
				return err
			}
		}
	}
	b.setup = setup
	return nil
}

// daemonArgs are the main lab daemons' flags.
func (b *bench) daemonArgs() []string {
	return []string{"--pprof", "--meshlet-dir", b.meshlet}
}

// daemonMode restarts both daemons with or without --sockmap, when that
// changes.
func (b *bench) daemonMode(sockmap bool) error {
	if sockmap == b.sockmapOn {
		return nil
	}
	args := b.daemonArgs()
	if sockmap {
		args = append(args, "--sockmap")
	}
	for _, n := range b.l.Nodes() {
		if err := b.l.RestartDaemonWith(context.Background(), n.Name, args); err != nil {
			return fmt.Errorf("restart %s (sockmap %v): %w", n.Name, sockmap, err)
		}
	}
	b.sockmapOn = sockmap
	return nil
}

// connCount sums node i's meshless_connections_total.
func (b *bench) connCounts(ctx context.Context) (map[string]float64, error) {
	out := map[string]float64{}
	for _, n := range b.l.Nodes() {
		body, err := n.Metrics(ctx)
		if err != nil {
			return nil, err
		}
		for _, line := range strings.Split(body, "\n") {
			if !strings.HasPrefix(line, "meshless_connections_total{") {
				continue
			}
			i := strings.LastIndexByte(line, ' ')
			var v float64
			fmt.Sscan(line[i+1:], &v)
			out[n.Name+" "+line[len("meshless_connections_total"):i]] += v
		}
	}
	return out, nil
}

// verify sends one connection to the server at place and records which
// daemon paths counted it; it fails when the set-up is not in effect.
func (b *bench) verify(ctx context.Context, place string) error {
	before, err := b.connCounts(ctx)
	if err != nil {
		return err
	}
	if _, err := b.client(ctx, "conn", "-addr", b.target(place), "-count", "1"); err != nil {
		return fmt.Errorf("probe %s %s: %w", b.setup, place, err)
	}
	after, err := b.connCounts(ctx)
	if err != nil {
		return err
	}
	var got []string
	for k, v := range after {
		if d := v - before[k]; d > 0 {
			got = append(got, fmt.Sprintf("%s +%.0f", k, d))
		}
	}
	slices.Sort(got)
	desc := strings.Join(got, ", ")
	if desc == "" {
		desc = "no daemon connection"
	}
	ok := false
	switch b.setup {
	case report.Direct, report.Sidecar:
		ok = len(got) == 0
	case report.Meshless, report.Sockmap:
		ok = strings.Contains(desc, `path="local"`) || strings.Contains(desc, `path="remote"`)
		ok = ok && !strings.Contains(desc, `path="uds"`)
	case report.UDS:
		ok = strings.Contains(desc, `path="uds"`)
	}
	if b.setup == report.Sidecar {
		desc += "; HAProxy redirect rules in place"
	}
	b.res.Verified[b.setup+" "+place] = desc
	if !ok {
		return fmt.Errorf("set-up %s %s not in effect: %s", b.setup, place, desc)
	}
	return nil
}

func (b *bench) target(place string) string {
	ref := sameServer
	if place == report.Cross {
		ref = crossSrv
	}
	p, _ := b.l.Pod(ref)
	return net.JoinHostPort(p.IP.String(), fmt.Sprint(appPort))
}

// client runs benchapp in the client pod and returns its stdout.
func (b *bench) client(ctx context.Context, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, filepath.Join(b.cfg.BinDir, "benchapp"), args...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := b.l.Run(client, cmd); err != nil {
		return nil, fmt.Errorf("benchapp %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(errb.String()))
	}
	return out.Bytes(), nil
}

// meshPIDs are the processes whose CPU and memory the set-up costs.
func (b *bench) meshPIDs(place string) []int {
	switch b.setup {
	case report.Meshless, report.UDS, report.Sockmap:
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

// limitTimeWait caps TIME_WAIT sockets in every node and pod netns of l.
// The new-connection test opens tens of thousands of short connections per
// round; their TIME_WAIT entries would use up the ephemeral ports and, since
// a mesh connection is three TCP connections where a direct one is one,
// starve the mesh set-ups first and under-measure them. Above the cap the
// kernel drops TIME_WAIT entries at once.
func limitTimeWait(l *lab.Lab) error {
	set := func() error {
		return os.WriteFile("/proc/sys/net/ipv4/tcp_max_tw_buckets", []byte("256"), 0o644)
	}
	for _, n := range l.Nodes() {
		if err := n.Do(set); err != nil {
			return fmt.Errorf("node %s: tcp_max_tw_buckets: %w", n.Name, err)
		}
	}
	for _, p := range l.Pods() {
		if err := l.InPod(p.Ref, set); err != nil {
			return fmt.Errorf("pod %s: tcp_max_tw_buckets: %w", p.Ref, err)
		}
	}
	return nil
}
