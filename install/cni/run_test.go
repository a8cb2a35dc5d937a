package cni

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// start runs the installer in a goroutine and returns its result channel;
// the test's end cancels it.
func start(t *testing.T, e *testEnv, watch bool) (context.CancelFunc, <-chan error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		done <- e.in.Run(ctx, watch)
	}()
	t.Cleanup(func() {
		cancel()
		<-finished
	})
	return cancel, done
}

// waitDone returns the installer's result, failing after 10s.
func waitDone(t *testing.T, done <-chan error) error {
	t.Helper()
	select {
	case err := <-done:
		return err
	case <-time.After(10 * time.Second):
		t.Fatal("installer did not return")
		return nil
	}
}

func TestRunWaitsForConfig(t *testing.T) {
	for _, mode := range []string{"inotify", "polling"} {
		t.Run(mode, func(t *testing.T) {
			e := newEnv(t)
			if mode == "polling" {
				e.in.noInotify = true
				e.in.cfg.Resync = 20 * time.Millisecond
			}
			_, done := start(t, e, false)
			eventually(t, "the waiting log", func() bool {
				return e.log.has("INFO", "no CNI config in "+e.conf+" yet; waiting")
			})
			path := filepath.Join(e.conf, "10-flannel.conflist")
			data := fixture(t, "10-flannel.conflist")
			created := make(chan error)
			go func() { created <- os.WriteFile(path, data, 0o644) }()
			if err := <-created; err != nil {
				t.Fatal(err)
			}
			if err := waitDone(t, done); err != nil {
				t.Fatal(err)
			}
			if !hasMeshlessLast(path) {
				t.Error("the config that appeared did not get the entry")
			}
			checkBinary(t, e)
		})
	}
}

func TestRunWaitCanceled(t *testing.T) {
	e := newEnv(t)
	cancel, done := start(t, e, false)
	eventually(t, "the waiting log", func() bool { return e.log.has("yet; waiting") })
	cancel()
	err := waitDone(t, done)
	if !errors.Is(err, context.Canceled) || !strings.Contains(err.Error(), e.conf) {
		t.Fatalf("err = %v, want a canceled wait naming the dir", err)
	}
	if len(dirState(t, e.conf)) != 0 {
		t.Error("files written")
	}
}

func TestWatchReinserts(t *testing.T) {
	e := newEnv(t)
	orig := fixture(t, "10-calico.conflist")
	path := e.put(t, "10-calico.conflist", orig, 0o600)
	cancel, done := start(t, e, true)
	eventually(t, "the first insertion", func() bool { return hasMeshlessLast(path) })

	// The primary CNI rewrites its conflist in place, without the entry.
	writeFile(t, path, string(orig), 0o600)
	eventually(t, "re-insertion after an in-place rewrite", func() bool { return hasMeshlessLast(path) })

	// ... and by rename, as most agents do.
	tmp := filepath.Join(e.conf, ".calico.tmp")
	writeFile(t, tmp, string(orig), 0o600)
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
	eventually(t, "re-insertion after a rename", func() bool { return hasMeshlessLast(path) })
	got, _ := os.ReadFile(path)
	golden(t, "10-calico.conflist", got)
	if fi, _ := os.Stat(path); fi.Mode().Perm() != 0o600 {
		t.Errorf("mode = %v", fi.Mode().Perm())
	}

	// A new config first in order becomes the primary.
	first := e.put(t, "05-cilium.conf", fixture(t, "05-cilium.conf"), 0o644)
	converted := conflistPath(first)
	eventually(t, "insertion into the new primary", func() bool {
		_, err := os.Stat(first)
		return hasMeshlessLast(converted) && errors.Is(err, os.ErrNotExist)
	})

	cancel()
	if err := waitDone(t, done); err != nil {
		t.Fatalf("watch did not exit cleanly: %v", err)
	}
	if !e.log.has("stopped watching") {
		t.Errorf("no stop log in:\n%s", e.log)
	}
}

func TestWatchPollingFallback(t *testing.T) {
	e := newEnv(t)
	e.in.noInotify = true
	e.in.cfg.Resync = 20 * time.Millisecond
	orig := fixture(t, "10-flannel.conflist")
	path := e.put(t, "10-flannel.conflist", orig, 0o644)
	start(t, e, true)
	eventually(t, "the first insertion", func() bool { return hasMeshlessLast(path) })
	writeFile(t, path, string(orig), 0o644)
	eventually(t, "re-insertion by the periodic re-check", func() bool { return hasMeshlessLast(path) })
	// The periodic re-check also restores the binary.
	if err := os.Remove(filepath.Join(e.bin, PluginType)); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the binary back", func() bool {
		_, err := os.Stat(filepath.Join(e.bin, PluginType))
		return err == nil
	})
}

func TestWatchConfDirCreatedLater(t *testing.T) {
	e := newEnv(t)
	if err := os.Remove(e.conf); err != nil {
		t.Fatal(err)
	}
	e.in.cfg.Resync = 20 * time.Millisecond // the watch is added by the re-check
	start(t, e, true)
	eventually(t, "the waiting log", func() bool { return e.log.has("yet; waiting") })
	if err := os.Mkdir(e.conf, 0o755); err != nil {
		t.Fatal(err)
	}
	path := e.put(t, "10-kindnet.conflist", fixture(t, "10-kindnet.conflist"), 0o644)
	eventually(t, "insertion", func() bool { return hasMeshlessLast(path) })
}

func TestMainCLI(t *testing.T) {
	e := newEnv(t)
	path := e.put(t, "10-flannel.conflist", fixture(t, "10-flannel.conflist"), 0o644)
	args := []string{"--plugin-bin", e.src, "--cni-bin-dir", e.bin, "--cni-conf-dir", e.conf,
		"--plugin-config", `{"daemonSocket":"/run/meshless/cni.sock","excludeNamespaces":["kube-system"]}`}
	var out, errOut bytes.Buffer
	for i := range 2 {
		if err := Main(context.Background(), args, &out, &errOut); err != nil {
			t.Fatalf("run %d: %v\n%s", i, err, errOut.String())
		}
		got, _ := os.ReadFile(path)
		golden(t, "10-flannel.conflist", got)
	}
	if !strings.Contains(out.String(), "meshless-cni installed") {
		t.Errorf("stdout = %q", out.String())
	}
	checkBinary(t, e)

	out.Reset()
	if err := Main(context.Background(), append(args, "--uninstall"), &out, &errOut); err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(path); string(got) != string(fixture(t, "10-flannel.conflist")) {
		t.Errorf("uninstall did not restore the file:\n%s", got)
	}
	if _, err := os.Stat(filepath.Join(e.bin, PluginType)); !errors.Is(err, os.ErrNotExist) {
		t.Error("binary not removed")
	}
}

func TestMainFlagErrors(t *testing.T) {
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"--plugin-config", `{"type":"bridge"}`}, `--plugin-config: plugin config: type must be "meshless-cni"`},
		{[]string{"--plugin-config", `{"daemonSocket":`}, "--plugin-config: plugin config: invalid JSON"},
		{[]string{"--plugin-config", "@/nonexistent/meshless.json"}, "--plugin-config: read"},
		{[]string{"--watch", "--uninstall"}, "exclude each other"},
		{[]string{"--log-level", "loud"}, "--log-level"},
		{[]string{"extra"}, `unexpected argument "extra"`},
		{[]string{"--no-such-flag"}, "not defined"},
	}
	for _, tt := range tests {
		var out, errOut bytes.Buffer
		err := Main(context.Background(), tt.args, &out, &errOut)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%v: err = %v, want %q", tt.args, err, tt.want)
		}
	}
	var out, errOut bytes.Buffer
	if err := Main(context.Background(), []string{"-h"}, &out, &errOut); err != nil {
		t.Errorf("-h: %v", err)
	}
	if !strings.Contains(errOut.String(), "--cni-conf-dir") && !strings.Contains(errOut.String(), "-cni-conf-dir") {
		t.Errorf("usage lacks the flags:\n%s", errOut.String())
	}
}
