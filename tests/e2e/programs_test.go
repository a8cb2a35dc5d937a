// Package e2e runs real third-party programs from Debian packages, which
// know nothing of the mesh, in the pods of a local lab (internal/lab): nginx
// served to curl, redis-server driven by redis-cli and redis-benchmark,
// same-node and cross-node. Each workload runs twice on the same pods:
// meshed, as the lab wires them, and again after the Meshless rules are
// removed from the client's and the server's netns. The results must be
// the same, and the source node's meshless_connections_total must show
// that the first run went through the daemons (path local or remote) and
// the second did not.
//
// Run as root: go test ./tests/e2e/ (`make deps` installs the programs; with
// CI=true a missing program fails the test instead of skipping it).
package e2e

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/meshless/meshless/internal/testenv"
)

// program is a Debian program the suite runs, and the package holding it.
type program struct{ name, pkg string }

// programs are every program the suite needs; tests/install-deps.sh lists
// the same packages.
var programs = []program{
	{"nginx", "nginx"},
	{"curl", "curl"},
	{"redis-server", "redis-server"},
	{"redis-cli", "redis-tools"},
	{"redis-benchmark", "redis-tools"},
	{"nft", "nftables"},
}

// requirePrograms returns the full path of each program, by name. A
// missing one fails the test when CI=true (CI must run the suite) and
// skips it otherwise.
func requirePrograms(t *testing.T) map[string]string {
	t.Helper()
	paths := map[string]string{}
	var missing, pkgs []string
	for _, p := range programs {
		path, err := lookPath(p.name)
		if err != nil {
			missing = append(missing, p.name)
			if !slices.Contains(pkgs, p.pkg) {
				pkgs = append(pkgs, p.pkg)
			}
			continue
		}
		paths[p.name] = path
	}
	if len(missing) == 0 {
		return paths
	}
	testenv.Missing(t, fmt.Sprintf("programs %s (Debian packages %s): `make deps` (tests/install-deps.sh) installs them",
		strings.Join(missing, ", "), strings.Join(pkgs, " ")))
	return nil
}

// lookPath finds a program in PATH and in the sbin folders, which a
// non-login root shell may lack (nginx is /usr/sbin/nginx).
func lookPath(name string) (string, error) {
	if p, err := exec.LookPath(name); err == nil {
		return p, nil
	}
	for _, dir := range []string{"/usr/sbin", "/sbin", "/usr/local/sbin"} {
		p := dir + "/" + name
		if st, err := os.Stat(p); err == nil && st.Mode().IsRegular() && st.Mode().Perm()&0o111 != 0 {
			return p, nil
		}
	}
	return "", fmt.Errorf("%s not found", name)
}

// benchLine is one result line of `redis-benchmark -q`, e.g.
// "SET: 41666.67 requests per second, p50=0.055 msec". Progress lines
// ("SET: rps=...") are overwritten with \r and do not match.
var benchLine = regexp.MustCompile(`^([A-Z_]+): ([0-9]+(?:\.[0-9]+)?) requests per second`)

// parseBenchmark returns the requests per second of each test in the
// output of `redis-benchmark -q`, and fails on any line reporting an error.
func parseBenchmark(out string) (map[string]float64, error) {
	rps := map[string]float64{}
	sc := bufio.NewScanner(strings.NewReader(strings.ReplaceAll(out, "\r", "\n")))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" {
			continue
		}
		if strings.Contains(strings.ToLower(line), "error") {
			return nil, fmt.Errorf("redis-benchmark reported %q", line)
		}
		m := benchLine.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		v, err := strconv.ParseFloat(m[2], 64)
		if err != nil {
			return nil, fmt.Errorf("redis-benchmark line %q: %w", line, err)
		}
		rps[m[1]] = v
	}
	if len(rps) == 0 {
		return nil, fmt.Errorf("no result line in redis-benchmark output %q", out)
	}
	return rps, nil
}

func TestParseBenchmark(t *testing.T) {
	out := "SET: rps=0.0 (overall: nan) avg_msec=nan (overall: nan)\r" +
		"SET: 41666.67 requests per second, p50=0.055 msec                    \n" +
		"GET: rps=12000.0 (overall: 12000.0) avg_msec=0.1 (overall: 0.1)\r" +
		"GET: 50000.00 requests per second, p50=0.047 msec                    \n\n"
	got, err := parseBenchmark(out)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got["SET"] != 41666.67 || got["GET"] != 50000 {
		t.Errorf("parseBenchmark = %v", got)
	}
	for _, bad := range []string{
		"",
		"SET: rps=0.0 (overall: nan)\r",
		"Error: Connection reset by peer\n",
		"SET: 100.00 requests per second\nWriting to socket: Error\n",
	} {
		if got, err := parseBenchmark(bad); err == nil {
			t.Errorf("parseBenchmark(%q) = %v, want an error", bad, got)
		}
	}
}

func TestLookPath(t *testing.T) {
	if _, err := lookPath("sh"); err != nil {
		t.Errorf("lookPath(sh): %v", err)
	}
	if p, err := lookPath("meshless-no-such-program"); err == nil {
		t.Errorf("lookPath found %s", p)
	}
}
