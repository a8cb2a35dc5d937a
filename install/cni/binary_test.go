package cni

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestInstallBinary(t *testing.T) {
	tests := []struct {
		name    string
		prepare func(t *testing.T, dst string) // state of the destination before
		wrote   bool
	}{
		{name: "absent", prepare: func(*testing.T, string) {}, wrote: true},
		{name: "other content", wrote: true, prepare: func(t *testing.T, dst string) {
			writeFile(t, dst, "old version", 0o755)
		}},
		{name: "same size other content", wrote: true, prepare: func(t *testing.T, dst string) {
			writeFile(t, dst, "#!/bin/sh\necho PLUGIN\n", 0o755)
		}},
		{name: "same content wrong mode", wrote: true, prepare: func(t *testing.T, dst string) {
			writeFile(t, dst, "#!/bin/sh\necho plugin\n", 0o644)
		}},
		{name: "identical", wrote: false, prepare: func(t *testing.T, dst string) {
			writeFile(t, dst, "#!/bin/sh\necho plugin\n", 0o755)
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t)
			dst := filepath.Join(e.bin, PluginType)
			tt.prepare(t, dst)
			wrote, err := e.in.InstallBinary()
			if err != nil {
				t.Fatal(err)
			}
			if wrote != tt.wrote {
				t.Errorf("wrote = %v, want %v", wrote, tt.wrote)
			}
			checkBinary(t, e)
			wrote, err = e.in.InstallBinary()
			if err != nil || wrote {
				t.Errorf("second install: wrote=%v err=%v", wrote, err)
			}
		})
	}
}

func writeFile(t *testing.T, path, data string, mode os.FileMode) {
	t.Helper()
	if err := os.WriteFile(path, []byte(data), mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, mode); err != nil {
		t.Fatal(err)
	}
}

// checkBinary asserts the installed binary's content and mode, and that the
// bin dir holds nothing else (no temp file).
func checkBinary(t *testing.T, e *testEnv) {
	t.Helper()
	dst := filepath.Join(e.bin, PluginType)
	want, _ := os.ReadFile(e.src)
	got, err := os.ReadFile(dst)
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != string(want) {
		t.Errorf("content = %q, want %q", got, want)
	}
	fi, _ := os.Stat(dst)
	if fi.Mode().Perm() != 0o755 {
		t.Errorf("mode = %v, want 0755", fi.Mode().Perm())
	}
	if state := dirState(t, e.bin); len(state) != 1 {
		t.Errorf("bin dir holds %d files, want 1", len(state))
	}
}

func TestInstallBinaryLarge(t *testing.T) {
	e := newEnv(t)
	big := strings.Repeat("0123456789abcdef", 20000) // several compare chunks
	writeFile(t, e.src, big, 0o700)
	if _, err := e.in.InstallBinary(); err != nil {
		t.Fatal(err)
	}
	checkBinary(t, e)
	// One byte differs near the end: detected.
	dst := filepath.Join(e.bin, PluginType)
	writeFile(t, dst, big[:len(big)-1]+"X", 0o755)
	if wrote, err := e.in.InstallBinary(); err != nil || !wrote {
		t.Fatalf("wrote=%v err=%v", wrote, err)
	}
	checkBinary(t, e)
}

func TestInstallBinaryErrors(t *testing.T) {
	e := newEnv(t)
	e.in.cfg.PluginBin = filepath.Join(t.TempDir(), "missing")
	_, err := e.in.InstallBinary()
	if err == nil || !strings.Contains(err.Error(), "--plugin-bin") {
		t.Fatalf("err = %v, want a hint about --plugin-bin", err)
	}
	e.in.cfg.PluginBin = t.TempDir()
	if _, err := e.in.InstallBinary(); err == nil || !strings.Contains(err.Error(), "not a regular file") {
		t.Fatalf("err = %v", err)
	}
}

func TestRemoveBinary(t *testing.T) {
	e := newEnv(t)
	if _, err := e.in.InstallBinary(); err != nil {
		t.Fatal(err)
	}
	for i, want := range []bool{true, false} {
		removed, err := removeBinary(e.bin)
		if err != nil || removed != want {
			t.Errorf("remove %d: removed=%v err=%v", i, removed, err)
		}
	}
}
