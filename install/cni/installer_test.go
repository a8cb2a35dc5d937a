package cni

import (
	"bytes"
	"errors"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func TestInsertFilePreservesMode(t *testing.T) {
	for _, mode := range []os.FileMode{0o644, 0o600} {
		for _, name := range []string{"10-flannel.conflist", "10-calico.conflist", "05-cilium.conflist", "10-kindnet.conflist"} {
			t.Run(name+"/"+mode.String(), func(t *testing.T) {
				e := newEnv(t)
				path := e.put(t, name, fixture(t, name), mode)
				res, err := e.in.Insert()
				if err != nil {
					t.Fatal(err)
				}
				if res.Conf != path || !res.Changed {
					t.Errorf("result = %+v", res)
				}
				fi, err := os.Stat(path)
				if err != nil {
					t.Fatal(err)
				}
				if fi.Mode().Perm() != mode {
					t.Errorf("mode = %v, want %v", fi.Mode().Perm(), mode)
				}
				if !hasMeshlessLast(path) {
					t.Error("meshless-cni is not last")
				}
				before := dirState(t, e.conf)
				res, err = e.in.Insert()
				if err != nil || res.Changed {
					t.Fatalf("second insert: %+v %v", res, err)
				}
				fi2, _ := os.Stat(path)
				if !os.SameFile(fi, fi2) || !fi.ModTime().Equal(fi2.ModTime()) {
					t.Error("second insert rewrote the file")
				}
				if after := dirState(t, e.conf); !mapsEqual(before, after) {
					t.Errorf("second insert changed the dir: %v", after)
				}
			})
		}
	}
}

func mapsEqual(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

func TestInsertConvertsConf(t *testing.T) {
	for _, ext := range []string{".conf", ".json"} {
		t.Run(ext, func(t *testing.T) {
			e := newEnv(t)
			src := e.put(t, "05-cilium"+ext, fixture(t, "05-cilium.conf"), 0o600)
			// A later config must not become primary by the conversion.
			e.put(t, "10-flannel.conflist", fixture(t, "10-flannel.conflist"), 0o644)
			res, err := e.in.Insert()
			if err != nil {
				t.Fatal(err)
			}
			dst := filepath.Join(e.conf, "05-cilium.conflist")
			if res.Conf != dst || res.Converted != src || !res.Changed {
				t.Errorf("result = %+v", res)
			}
			if _, err := os.Stat(src); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("the old conf is still there: %v", err)
			}
			got, _ := os.ReadFile(dst)
			golden(t, "05-cilium.conf.conflist", got)
			if fi, _ := os.Stat(dst); fi.Mode().Perm() != 0o600 {
				t.Errorf("mode = %v, want 0600", fi.Mode().Perm())
			}
			files, _ := confFiles(e.conf)
			if files[0] != dst {
				t.Errorf("the converted list is not first: %v", files)
			}
			if flannel, _ := os.ReadFile(filepath.Join(e.conf, "10-flannel.conflist")); string(flannel) != string(fixture(t, "10-flannel.conflist")) {
				t.Error("a config that is not primary was changed")
			}
			if res, err := e.in.Insert(); err != nil || res.Changed {
				t.Errorf("second insert: %+v %v", res, err)
			}
		})
	}
}

func TestInsertSkipsInvalid(t *testing.T) {
	e := newEnv(t)
	e.put(t, "00-broken.conflist", []byte(`{"name": "broken", "plugins": [`), 0o644)
	e.put(t, "01-notlist.conflist", []byte(`{"name": "x", "plugins": {"type": "bridge"}}`), 0o644)
	e.put(t, "02-list-in-conf.conf", []byte(`{"name": "x", "plugins": [{"type": "bridge"}]}`), 0o644)
	e.put(t, "03-ours-only.conflist", []byte(`{"name": "x", "plugins": [{"type": "meshless-cni"}]}`), 0o644)
	e.put(t, "README.md", []byte("not a config"), 0o644)
	before := dirState(t, e.conf)

	_, err := e.in.Insert()
	if !errors.Is(err, ErrNoConfig) {
		t.Fatalf("err = %v, want ErrNoConfig", err)
	}
	if after := dirState(t, e.conf); !mapsEqual(before, after) {
		t.Errorf("files were written: %v", after)
	}
	for _, want := range [][]string{
		{"ERROR", "00-broken.conflist", "invalid JSON"},
		{"ERROR", "01-notlist.conflist", "plugins is not a list"},
		{"ERROR", "02-list-in-conf.conf", ".conflist extension"},
		{"ERROR", "03-ours-only.conflist", "no plugin besides"},
	} {
		if !e.log.has(want...) {
			t.Errorf("no log with %q in:\n%s", want, e.log)
		}
	}
	// The problems are logged once, not on every pass.
	n := strings.Count(e.log.String(), "00-broken")
	_, _ = e.in.Insert()
	if m := strings.Count(e.log.String(), "00-broken"); m != n {
		t.Errorf("the same problem was logged again")
	}

	path := e.put(t, "10-kindnet.conflist", fixture(t, "10-kindnet.conflist"), 0o644)
	if _, err := e.in.Insert(); err != nil {
		t.Fatal(err)
	}
	if !hasMeshlessLast(path) {
		t.Error("the first valid config did not get the entry")
	}
	for name, data := range before {
		if got, _ := os.ReadFile(filepath.Join(e.conf, name)); string(got) != data {
			t.Errorf("%s was changed", name)
		}
	}
}

func TestUninstall(t *testing.T) {
	e := newEnv(t)
	flannel := e.put(t, "10-flannel.conflist", fixture(t, "10-flannel.conflist"), 0o600)
	calico := e.put(t, "20-calico.conflist", fixture(t, "10-calico.conflist"), 0o644)
	if _, err := e.in.InstallBinary(); err != nil {
		t.Fatal(err)
	}
	if _, err := e.in.Insert(); err != nil {
		t.Fatal(err)
	}
	// An entry left in a config that is no longer primary goes too.
	stale, err := insertEntry(fixture(t, "10-calico.conflist"), testEntry(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(calico, stale, 0o644); err != nil {
		t.Fatal(err)
	}
	for i := range 2 {
		if err := e.in.Uninstall(); err != nil {
			t.Fatalf("uninstall %d: %v", i, err)
		}
		if got, _ := os.ReadFile(flannel); string(got) != string(fixture(t, "10-flannel.conflist")) {
			t.Errorf("uninstall %d: flannel not restored:\n%s", i, got)
		}
		if got, _ := os.ReadFile(calico); string(got) != string(fixture(t, "10-calico.conflist")) {
			t.Errorf("uninstall %d: calico not restored:\n%s", i, got)
		}
		if fi, _ := os.Stat(flannel); fi.Mode().Perm() != 0o600 {
			t.Errorf("mode = %v", fi.Mode().Perm())
		}
		if _, err := os.Stat(filepath.Join(e.bin, PluginType)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("binary still there: %v", err)
		}
		if names := slices.Sorted(maps.Keys(dirState(t, e.conf))); !slices.Equal(names, []string{"10-flannel.conflist", "20-calico.conflist"}) {
			t.Errorf("files = %v", names)
		}
	}
}

func TestUninstallConverted(t *testing.T) {
	e := newEnv(t)
	e.put(t, "05-cilium.conf", fixture(t, "05-cilium.conf"), 0o644)
	if _, err := e.in.Insert(); err != nil {
		t.Fatal(err)
	}
	if err := e.in.Uninstall(); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(filepath.Join(e.conf, "05-cilium.conflist"))
	if err != nil {
		t.Fatal(err)
	}
	if types := pluginTypes(t, got); !slices.Equal(types, []string{"cilium-cni"}) {
		t.Errorf("types = %v", types)
	}
}

func TestWriteAtomicConflict(t *testing.T) {
	e := newEnv(t)
	path := e.put(t, "10-flannel.conflist", fixture(t, "10-flannel.conflist"), 0o644)
	_, fi, err := readStat(path)
	if err != nil {
		t.Fatal(err)
	}
	// "The primary CNI" replaces its file after the installer read it.
	rewritten := append(fixture(t, "10-flannel.conflist"), '\n')
	if err := os.WriteFile(path+".new", rewritten, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(path+".new", path); err != nil {
		t.Fatal(err)
	}
	err = writeAtomic(path, bytes.NewReader([]byte("{}")), metaOf(fi), path, fi)
	if !errors.Is(err, errChanged) {
		t.Fatalf("err = %v, want errChanged", err)
	}
	state := dirState(t, e.conf)
	if len(state) != 1 || state["10-flannel.conflist"] != string(rewritten) {
		t.Errorf("dir after a refused write: %v", state)
	}
}

func TestInsertSymlinkedConfig(t *testing.T) {
	e := newEnv(t)
	target := filepath.Join(t.TempDir(), "flannel.conflist")
	writeFile(t, target, string(fixture(t, "10-flannel.conflist")), 0o644)
	link := filepath.Join(e.conf, "10-flannel.conflist")
	if err := os.Symlink(target, link); err != nil {
		t.Fatal(err)
	}
	if _, err := e.in.Insert(); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Lstat(link); err != nil || fi.Mode()&os.ModeSymlink == 0 {
		t.Fatalf("the link was replaced: %v", err)
	}
	if !hasMeshlessLast(target) {
		t.Error("the link's target did not get the entry")
	}
	if err := e.in.Uninstall(); err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(target); string(got) != string(fixture(t, "10-flannel.conflist")) {
		t.Errorf("uninstall did not restore the target:\n%s", got)
	}
}
