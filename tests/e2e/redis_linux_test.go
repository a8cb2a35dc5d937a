package e2e

import (
	"bufio"
	"crypto/sha256"
	"fmt"
	"io"
	"net"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/meshless/meshless/internal/lab"
)

const (
	redisPort    = 6379
	redisKeys    = 50
	redisIncrs   = 20
	redisTimeout = 60 * time.Second
	// The benchmark: small enough for two shared cores, large enough to
	// keep several connections busy.
	benchRequests = 2000
	benchClients  = 4
)

// redisServer is one redis-server in a pod.
type redisServer struct {
	*server
	l   *lab.Lab
	ref string
}

// startRedis runs redis-server in the foreground in pod ref, without
// persistence, its files in a temporary folder, and waits until it answers
// PING on the pod's loopback.
func startRedis(t *testing.T, l *lab.Lab, bin, ref string) *redisServer {
	t.Helper()
	dir := t.TempDir()
	logPath := filepath.Join(dir, "redis.log")
	srv := startServer(t, l, ref, filepath.Join(dir, "stdout.log"), bin,
		"--port", strconv.Itoa(redisPort), "--bind", "0.0.0.0",
		// Clients come from other pods, without a password.
		"--protected-mode", "no",
		"--save", "", "--appendonly", "no", "--dir", dir,
		"--daemonize", "no", "--logfile", logPath)
	srv.log = logPath
	r := &redisServer{server: srv, l: l, ref: ref}
	srv.waitReady(t, 15*time.Second, func() error {
		_, err := r.command("PING")
		return err
	})
	return r
}

// command sends one inline command on a new connection to the server on
// its pod's loopback (which the Meshless rules do not redirect) and
// returns the reply's first line, or the whole bulk reply.
func (r *redisServer) command(cmd string) (string, error) {
	var c net.Conn
	err := r.l.InPod(r.ref, func() error {
		var err error
		c, err = net.DialTimeout("tcp4", fmt.Sprintf("127.0.0.1:%d", redisPort), time.Second)
		return err
	})
	if err != nil {
		return "", err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(c, cmd+"\r\n"); err != nil {
		return "", err
	}
	br := bufio.NewReader(c)
	line, err := br.ReadString('\n')
	if err != nil {
		return "", err
	}
	line = strings.TrimRight(line, "\r\n")
	switch {
	case strings.HasPrefix(line, "-"):
		return "", fmt.Errorf("%s: %s", cmd, line)
	case strings.HasPrefix(line, "$"):
		n, err := strconv.Atoi(line[1:])
		if err != nil || n < 0 {
			return "", fmt.Errorf("%s: bulk reply %q", cmd, line)
		}
		b := make([]byte, n+2)
		if _, err := io.ReadFull(br, b); err != nil {
			return "", err
		}
		return string(b[:n]), nil
	}
	return strings.TrimPrefix(line, "+"), nil
}

// connections returns the server's total_connections_received. The
// connection reading it counts too.
func (r *redisServer) connections(t *testing.T) int {
	t.Helper()
	info, err := r.command("INFO stats")
	if err != nil {
		t.Fatalf("redis INFO in %s: %v", r.ref, err)
	}
	for _, line := range strings.Split(info, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "total_connections_received:"); ok {
			n, err := strconv.Atoi(v)
			if err != nil {
				t.Fatalf("redis INFO: %q: %v", line, err)
			}
			return n
		}
	}
	t.Fatalf("no total_connections_received in INFO stats of %s", r.ref)
	return 0
}

// redisResult is what the redis clients saw of one run of the workload.
type redisResult struct {
	// Written and Read are redis-cli's replies, one per line.
	Written, Read string
	// BenchTests are the tests redis-benchmark reported, all with a
	// nonzero rate.
	BenchTests []string
	// ServerConns is how many connections redis-server accepted.
	ServerConns int
}

func redisValue(i int) string {
	return fmt.Sprintf("%x", sha256.Sum256([]byte(strconv.Itoa(i))))
}

// redisScripts returns redis-cli's input for the writer (flush, SET every
// key, an INCR sequence) and the reader (GET every key and the counter,
// DBSIZE), and the replies each must print.
func redisScripts() (write, wantWrite, read, wantRead string) {
	var w, ww, r, wr strings.Builder
	w.WriteString("FLUSHALL\n")
	ww.WriteString("OK\n")
	for i := range redisKeys {
		fmt.Fprintf(&w, "SET e2e:key:%d %s\n", i, redisValue(i))
		ww.WriteString("OK\n")
		fmt.Fprintf(&r, "GET e2e:key:%d\n", i)
		fmt.Fprintf(&wr, "%s\n", redisValue(i))
	}
	for i := 1; i <= redisIncrs; i++ {
		w.WriteString("INCR e2e:counter\n")
		fmt.Fprintf(&ww, "%d\n", i)
	}
	r.WriteString("GET e2e:counter\nDBSIZE\n")
	fmt.Fprintf(&wr, "%d\n%d\n", redisIncrs, redisKeys+1)
	return w.String(), ww.String(), r.String(), wr.String()
}

// runRedis runs, in pod client against the server at ip: redis-cli
// writing, another redis-cli reading (two connections), then
// redis-benchmark.
func runRedis(t *testing.T, l *lab.Lab, client string, srv *redisServer, ip string) redisResult {
	t.Helper()
	before := srv.connections(t)
	write, _, read, _ := redisScripts()
	cli := []string{"redis-cli", "-h", ip, "-p", strconv.Itoa(redisPort), "--raw"}
	var r redisResult
	var err error
	if r.Written, err = runIn(t, l, client, redisTimeout, write, cli...); err != nil {
		t.Fatalf("redis-cli (write): %v", err)
	}
	if r.Read, err = runIn(t, l, client, redisTimeout, read, cli...); err != nil {
		t.Fatalf("redis-cli (read): %v", err)
	}
	out, err := runIn(t, l, client, redisTimeout, "", "redis-benchmark", "-h", ip, "-p", strconv.Itoa(redisPort),
		"-n", strconv.Itoa(benchRequests), "-c", strconv.Itoa(benchClients), "-t", "set,get", "-q")
	if err != nil {
		t.Fatalf("redis-benchmark: %v", err)
	}
	rps, err := parseBenchmark(out)
	if err != nil {
		t.Fatal(err)
	}
	for name, v := range rps {
		t.Logf("redis-benchmark %s: %.0f requests/s", name, v)
		if v > 0 {
			r.BenchTests = append(r.BenchTests, name)
		}
	}
	sort.Strings(r.BenchTests)
	// Minus the INFO connection of the second reading.
	r.ServerConns = srv.connections(t) - before - 1
	return r
}

// checkRedis compares a run's result with what the scripts expect.
func checkRedis(t *testing.T, r redisResult) {
	t.Helper()
	_, wantWrite, _, wantRead := redisScripts()
	if r.Written != wantWrite {
		t.Errorf("redis-cli (write) printed:\n%s\nwant:\n%s", r.Written, wantWrite)
	}
	if r.Read != wantRead {
		t.Errorf("redis-cli (read) printed:\n%s\nwant:\n%s", r.Read, wantRead)
	}
	if strings.Join(r.BenchTests, ",") != "GET,SET" {
		t.Errorf("redis-benchmark reported a nonzero rate for %v, want GET and SET", r.BenchTests)
	}
	// Two redis-cli, and at least the benchmark's clients.
	if r.ServerConns < 2+benchClients {
		t.Errorf("redis-server accepted %d connections, want at least %d", r.ServerConns, 2+benchClients)
	}
}
