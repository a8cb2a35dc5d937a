package cni

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/containernetworking/cni/libcni"
)

var update = flag.Bool("update", false, "rewrite the golden files under testdata/golden")

// logRecorder is a slog.Handler that keeps records for assertions.
type logRecorder struct {
	mu   sync.Mutex
	recs []string // "LEVEL msg k=v ..."
}

func (r *logRecorder) Enabled(context.Context, slog.Level) bool { return true }
func (r *logRecorder) WithAttrs([]slog.Attr) slog.Handler       { return r }
func (r *logRecorder) WithGroup(string) slog.Handler            { return r }

func (r *logRecorder) Handle(_ context.Context, rec slog.Record) error {
	var b strings.Builder
	b.WriteString(rec.Level.String() + " " + rec.Message)
	rec.Attrs(func(a slog.Attr) bool {
		b.WriteString(" " + a.String())
		return true
	})
	r.mu.Lock()
	r.recs = append(r.recs, b.String())
	r.mu.Unlock()
	return nil
}

// has reports whether a record contains every one of the substrings.
func (r *logRecorder) has(subs ...string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
next:
	for _, rec := range r.recs {
		for _, s := range subs {
			if !strings.Contains(rec, s) {
				continue next
			}
		}
		return true
	}
	return false
}

func (r *logRecorder) String() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return strings.Join(r.recs, "\n")
}

// eventually polls cond until it holds or 10s pass.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		<-tick.C
	}
}

// fixture returns the bytes of testdata/name.
func fixture(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// golden compares got with testdata/golden/name, or rewrites it with -update.
func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", "golden", name)
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -update to create it)", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s differs from golden:\n--- got\n%s\n--- want\n%s", name, got, want)
	}
}

// testEnv is a conf dir and bin dir with an installer on them.
type testEnv struct {
	conf, bin, src string
	log            *logRecorder
	in             *Installer
}

func newEnv(t *testing.T) *testEnv {
	t.Helper()
	root := t.TempDir()
	e := &testEnv{
		conf: filepath.Join(root, "net.d"),
		bin:  filepath.Join(root, "bin"),
		src:  filepath.Join(root, "meshless-cni"),
		log:  &logRecorder{},
	}
	for _, d := range []string{e.conf, e.bin} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(e.src, []byte("#!/bin/sh\necho plugin\n"), 0o700); err != nil {
		t.Fatal(err)
	}
	entry, err := NewEntry([]byte(`{"daemonSocket":"/run/meshless/cni.sock","excludeNamespaces":["kube-system"]}`))
	if err != nil {
		t.Fatal(err)
	}
	e.in = New(Config{PluginBin: e.src, BinDir: e.bin, ConfDir: e.conf, Entry: entry,
		Resync: time.Hour, Logger: slog.New(e.log)})
	return e
}

// put writes a conf file with mode.
func (e *testEnv) put(t *testing.T, name string, data []byte, mode os.FileMode) string {
	t.Helper()
	p := filepath.Join(e.conf, name)
	if err := os.WriteFile(p, data, mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(p, mode); err != nil {
		t.Fatal(err)
	}
	return p
}

// dirState maps every file name of dir to its content.
func dirState(t *testing.T, dir string) map[string]string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	m := map[string]string{}
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		m[e.Name()] = string(b)
	}
	return m
}

// pluginTypes returns the plugin types of a conflist as libcni loads it,
// failing the test when libcni rejects it.
func pluginTypes(t *testing.T, data []byte) []string {
	t.Helper()
	nc, err := libcni.NetworkConfFromBytes(data)
	if err != nil {
		t.Fatalf("libcni rejects the conflist: %v\n%s", err, data)
	}
	var types []string
	for _, p := range nc.Plugins {
		types = append(types, p.Network.Type)
	}
	return types
}

// hasMeshlessLast reports whether the file parses with libcni and ends with
// the meshless entry.
func hasMeshlessLast(path string) bool {
	b, err := os.ReadFile(path)
	if err != nil {
		return false
	}
	nc, err := libcni.NetworkConfFromBytes(b)
	if err != nil || len(nc.Plugins) == 0 {
		return false
	}
	return nc.Plugins[len(nc.Plugins)-1].Network.Type == PluginType
}

// plugins returns the compacted plugin entries of a conflist.
func plugins(t *testing.T, data []byte) []string {
	t.Helper()
	var v struct{ Plugins []json.RawMessage }
	if err := json.Unmarshal(data, &v); err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, p := range v.Plugins {
		var b bytes.Buffer
		_ = json.Compact(&b, p)
		out = append(out, b.String())
	}
	return out
}
