package check_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/meshless/meshless/internal/lab"
	"github.com/meshless/meshless/internal/nstest"
	"github.com/meshless/meshless/internal/testbins"
)

// nodeLines are the node checks' names, in report order.
var nodeLines = []string{
	"kernel: netns", "kernel: redirect", "kernel: SO_ORIGINAL_DST", "kernel: transparent", "kernel: sockmap",
	"cni: chain", "cni: plugin binary", "cni: chain binaries",
	"daemon: socket", "daemon: ready", "daemon: admin",
}

// report is one run of `meshlessctl check`: each line's status and text by
// check name, and the exit status.
type report struct {
	status map[string]string
	line   map[string]string
	code   int
	out    string
}

// labNode is a one-node lab with its conflist written into a conf dir, as
// a runtime would find it.
type labNode struct {
	lab     *lab.Lab
	node    lab.Node
	ctl     string
	confDir string
	list    map[string]any
}

func upNode(t *testing.T) *labNode {
	t.Helper()
	nstest.RequireRoot(t)
	b := testbins.Get(t)
	name := fmt.Sprintf("chk%d", os.Getpid()%100000)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	l, err := lab.Up(ctx, lab.Options{Name: name, Nodes: 1, Pods: 1, BinDir: b.Dir, CNIBinDir: b.RefDir, Log: io.Discard})
	if err != nil {
		t.Fatalf("lab up: %v", err)
	}
	t.Cleanup(func() {
		if err := lab.Down(context.Background(), name, "", nil); err != nil {
			t.Errorf("lab down: %v", err)
		}
	})
	n, err := l.Node(1)
	if err != nil {
		t.Fatal(err)
	}
	conf, err := l.NodeConflist(n.Name)
	if err != nil {
		t.Fatal(err)
	}
	ln := &labNode{lab: l, node: n, ctl: b.Path("meshlessctl")}
	if err := json.Unmarshal(conf, &ln.list); err != nil {
		t.Fatal(err)
	}
	ln.confDir = ln.writeConf(t, ln.list)
	return ln
}

// writeConf writes list into a new conf dir and returns the dir.
func (ln *labNode) writeConf(t *testing.T, list map[string]any) string {
	t.Helper()
	dir := t.TempDir()
	b, err := json.Marshal(list)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "10-meshless-lab.conflist"), b, 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

// withPlugins returns the node's conflist with its plugins passed through
// edit (which returns nil to drop one).
func (ln *labNode) withPlugins(edit func(map[string]any) map[string]any) map[string]any {
	out := map[string]any{}
	for k, v := range ln.list {
		out[k] = v
	}
	var ps []any
	for _, p := range ln.list["plugins"].([]any) {
		c := map[string]any{}
		for k, v := range p.(map[string]any) {
			c[k] = v
		}
		if c = edit(c); c != nil {
			ps = append(ps, c)
		}
	}
	out["plugins"] = ps
	return out
}

// check runs meshlessctl check inside the node's netns (where the daemon's
// admin address is), with the lab's CNI dirs unless args override them.
func (ln *labNode) check(t *testing.T, args ...string) report {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	full := append([]string{"check", "--cluster=false", "--cni-conf-dir", ln.confDir, "--cni-bin-dir", ln.lab.CNIBinDir()}, args...)
	cmd := exec.CommandContext(ctx, ln.ctl, full...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := ln.node.Do(cmd.Run)
	r := report{status: map[string]string{}, line: map[string]string{}, out: out.String()}
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		r.code = ee.ExitCode()
	case err != nil:
		t.Fatalf("run meshlessctl check: %v\n%s", err, out.String())
	}
	sc := bufio.NewScanner(strings.NewReader(r.out))
	for sc.Scan() {
		l := sc.Text()
		if len(l) < 31 || l[4:6] != "  " {
			continue
		}
		name := strings.TrimSpace(l[6:30])
		r.status[name], r.line[name] = strings.TrimSpace(l[:4]), l
	}
	t.Logf("meshlessctl %s (exit %d):\n%s", strings.Join(full, " "), r.code, r.out)
	return r
}

// expect fails t unless each node line has its wanted status (OK when not
// in want; the sockmap line is INFO whatever it found) and the failing
// lines contain their wanted text.
func (r report) expect(t *testing.T, want map[string]string, text map[string]string) {
	t.Helper()
	for _, name := range nodeLines {
		w := want[name]
		if w == "" {
			w = "OK"
		}
		if name == "kernel: sockmap" {
			w = "INFO"
		}
		if r.status[name] != w {
			t.Errorf("%s: status %q, want %q (line %q)", name, r.status[name], w, r.line[name])
		}
	}
	for name, s := range text {
		if !strings.Contains(r.line[name], s) {
			t.Errorf("%s: line %q does not say %q", name, r.line[name], s)
		}
	}
	wantCode := 0
	for _, s := range want {
		if s == "FAIL" {
			wantCode = 1
		}
	}
	if r.code != wantCode {
		t.Errorf("exit status %d, want %d", r.code, wantCode)
	}
}

// TestNodeChecksOnLab runs the node checks on a lab node: healthy, every
// line passes; then each broken part fails its own line, with its fix,
// and only that line.
func TestNodeChecksOnLab(t *testing.T) {
	ln := upNode(t)
	t.Run("healthy", func(t *testing.T) {
		r := ln.check(t)
		r.expect(t, nil, map[string]string{
			"cni: chain":     "bridge -> meshless-cni",
			"daemon: socket": "node " + ln.node.Name + " answers on " + ln.node.Socket,
			"daemon: admin":  "ready",
		})
		if !strings.Contains(r.out, "no check failed") {
			t.Errorf("no summary line in:\n%s", r.out)
		}
	})
	t.Run("conflist without meshless-cni", func(t *testing.T) {
		list := ln.withPlugins(func(p map[string]any) map[string]any {
			if p["type"] == "meshless-cni" {
				return nil
			}
			return p
		})
		dir := ln.writeConf(t, list)
		// The socket is the conflist's no more: name it.
		r := ln.check(t, "--cni-conf-dir", dir, "--socket", ln.node.Socket)
		r.expect(t, map[string]string{"cni: chain": "FAIL"}, map[string]string{
			"cni: chain": "(bridge) does not chain meshless-cni; fix: run `meshlessctl install-cni`",
		})
	})
	t.Run("plugin binary missing", func(t *testing.T) {
		bin := t.TempDir()
		for _, p := range []string{"bridge", "host-local", "loopback"} {
			if err := os.Symlink(filepath.Join(ln.lab.CNIBinDir(), p), filepath.Join(bin, p)); err != nil {
				t.Fatal(err)
			}
		}
		r := ln.check(t, "--cni-bin-dir", bin)
		r.expect(t, map[string]string{"cni: plugin binary": "FAIL"}, map[string]string{
			"cni: plugin binary": filepath.Join(bin, "meshless-cni") + ": no such file or directory; fix:",
		})
	})
	t.Run("socket missing", func(t *testing.T) {
		gone := filepath.Join(t.TempDir(), "cni.sock")
		dir := ln.writeConf(t, ln.withPlugins(func(p map[string]any) map[string]any {
			if p["type"] == "meshless-cni" {
				p["daemonSocket"] = gone
			}
			return p
		}))
		r := ln.check(t, "--cni-conf-dir", dir)
		r.expect(t, map[string]string{"daemon: socket": "FAIL", "daemon: ready": "FAIL"}, map[string]string{
			"daemon: socket": "no daemon on " + gone + " (from " + filepath.Join(dir, "10-meshless-lab.conflist") + "): connect: no such file or directory; fix: start meshlessd",
		})
	})
	// Last: the daemon does not come back.
	t.Run("daemon stopped", func(t *testing.T) {
		if err := ln.lab.KillDaemon(ln.node.Name); err != nil {
			t.Fatal(err)
		}
		r := ln.check(t)
		r.expect(t, map[string]string{"daemon: socket": "FAIL", "daemon: ready": "FAIL", "daemon: admin": "FAIL"}, map[string]string{
			"daemon: socket": "connect: connection refused; fix: start meshlessd",
			"daemon: admin":  "127.0.0.1:15020",
		})
	})
}
