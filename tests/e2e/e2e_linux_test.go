package e2e

import (
	"fmt"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/meshless/meshless/tests/harness"

	"github.com/meshless/meshless/internal/lab"
	"github.com/meshless/meshless/internal/testenv"
)

// The pods of the suite: the client on node 1, a server on each node.
const (
	clientPod       = "n1/p2"
	sameNodeServer  = "n1/p1"
	crossNodeServer = "n2/p1"
	// metricTimeout bounds the wait for the daemons' counters, which the
	// daemons update as the connections start and end.
	metricTimeout = 10 * time.Second
)

var outboundPaths = []string{"local", "uds", "remote", "passthrough"}

// placement is a client/server pair and the path the mesh must take.
type placement struct {
	name   string // "same-node", "cross-node"
	server string // pod ref
	path   string // outbound path label counted on the client's node
}

var placements = []placement{
	{"same-node", sameNodeServer, "local"},
	{"cross-node", crossNodeServer, "remote"},
}

// run is one workload run: what the programs saw, and how many
// connections they made (which the mesh must have counted).
type run struct {
	result any
	conns  int
	// minBytes is the least the daemons must count in
	// meshless_bytes_total{direction="outbound"} on the client's node.
	minBytes float64
}

// workload runs one pair of programs from the client pod to a server pod.
type workload struct {
	name string
	run  func(t *testing.T, server string) run
}

// TestThirdPartyPrograms runs nginx with curl, and redis-server with
// redis-cli and redis-benchmark, same-node and cross-node: first through
// the mesh, then on the same pods with the Meshless rules removed. Each run
// must give the expected results, both runs the same results, and the
// daemons' counters must show the first run and only the first went
// through them.
func TestThirdPartyPrograms(t *testing.T) {
	bin := requirePrograms(t)
	l := upLab(t)
	clientIP := harness.LabPod(t, l, clientPod).IP.String()

	s := makeSite(t)
	nginxes := map[string]*nginx{}
	redises := map[string]*redisServer{}
	for _, ref := range []string{sameNodeServer, crossNodeServer} {
		nginxes[ref] = startNginx(t, l, bin["nginx"], ref, s)
		redises[ref] = startRedis(t, l, bin["redis-server"], ref)
	}
	workloads := []workload{
		{"nginx+curl", func(t *testing.T, server string) run {
			r := runCurl(t, l, clientPod, nginxes[server], harness.LabPod(t, l, server).IP.String())
			checkHTTP(t, r, s, clientIP)
			return run{result: r, conns: curlRequests, minBytes: bigFileSize}
		}},
		{"redis", func(t *testing.T, server string) run {
			r := runRedis(t, l, clientPod, redises[server], harness.LabPod(t, l, server).IP.String())
			checkRedis(t, r)
			return run{result: r, conns: r.ServerConns}
		}},
	}

	results := map[string]any{} // "<phase>/<workload>/<placement>"
	for _, phase := range []string{"meshed", "unmeshed"} {
		if phase == "unmeshed" {
			if t.Failed() {
				t.FailNow() // the comparison needs every meshed run
			}
			unmesh(t, l, clientPod, sameNodeServer, crossNodeServer)
		}
		for _, w := range workloads {
			for _, p := range placements {
				name := phase + "/" + w.name + "/" + p.name
				t.Run(name, func(t *testing.T) {
					start := time.Now()
					before := readCounters(t, l)
					r := w.run(t, p.server)
					if phase == "meshed" {
						checkMeshed(t, l, before, p, r)
					} else {
						checkUnmeshed(t, l, before)
					}
					results[name] = r.result
					t.Logf("%s in %s, %d connections", name, time.Since(start).Round(time.Millisecond), r.conns)
				})
			}
		}
	}

	for _, w := range workloads {
		for _, p := range placements {
			t.Run("same results/"+w.name+"/"+p.name, func(t *testing.T) {
				meshed, ok1 := results["meshed/"+w.name+"/"+p.name]
				unmeshed, ok2 := results["unmeshed/"+w.name+"/"+p.name]
				if !ok1 || !ok2 {
					t.Fatalf("a run is missing (meshed %v, unmeshed %v)", ok1, ok2)
				}
				if !reflect.DeepEqual(meshed, unmeshed) {
					t.Errorf("through the mesh:\n%+v\nwithout it:\n%+v", meshed, unmeshed)
				}
			})
		}
	}
}

// checkMeshed requires the client's node to have counted every connection
// of the run on path p.path and none on another path, with at least
// r.minBytes forwarded; cross-node, the server's node must have counted
// them arriving through the tunnel.
func checkMeshed(t *testing.T, l *lab.Lab, before counters, p placement, r run) {
	t.Helper()
	if r.conns <= 0 {
		t.Fatalf("the run made %d connections", r.conns)
	}
	want := counters{conns("n1", "outbound", p.path): float64(r.conns)}
	if p.path == "remote" {
		want[conns("n2", "inbound", "remote")] = float64(r.conns)
	}
	var d counters
	testenv.Eventually(t, metricTimeout, func() error {
		d = readCounters(t, l).sub(before)
		for k, v := range want {
			if d[k] < v {
				return fmt.Errorf("%s +%v, want +%v (changes: %v)", k, d[k], v, d)
			}
		}
		if b := d[bytesSeries("n1", "outbound")]; b < r.minBytes {
			return fmt.Errorf("%s +%v, want at least +%v", bytesSeries("n1", "outbound"), b, r.minBytes)
		}
		return nil
	})
	for k, v := range want {
		if d[k] != v {
			t.Errorf("%s +%v, want exactly +%v, one per connection", k, d[k], v)
		}
	}
	for _, path := range outboundPaths {
		if k := conns("n1", "outbound", path); path != p.path && d[k] != 0 {
			t.Errorf("%s +%v, want +0: the traffic took another path (changes: %v)", k, d[k], d)
		}
	}
	t.Logf("daemon counters: %v", d)
}

// checkUnmeshed requires no daemon to have counted a connection during the
// run.
func checkUnmeshed(t *testing.T, l *lab.Lab, before counters) {
	t.Helper()
	d := readCounters(t, l).sub(before)
	for _, n := range []string{"n1", "n2"} {
		for _, dir := range []string{"outbound", "inbound"} {
			for _, path := range outboundPaths {
				if k := conns(n, dir, path); d[k] != 0 {
					t.Errorf("%s +%v without the mesh, want +0 (changes: %v)", k, d[k], d)
				}
			}
		}
	}
}

// String lists the counters in order, for logs.
func (c counters) String() string {
	keys := make([]string, 0, len(c))
	for k := range c {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	var b strings.Builder
	for _, k := range keys {
		fmt.Fprintf(&b, "\n  %s %+g", k, c[k])
	}
	if b.Len() == 0 {
		return "none"
	}
	return b.String()
}
