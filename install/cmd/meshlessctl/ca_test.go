package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/meshless/meshless/daemon/identity"
)

// TestCACommands runs ca init and ca issue as an operator would, and
// checks what they wrote with the identity package.
func TestCACommands(t *testing.T) {
	dir := t.TempDir()
	caDir, n1 := filepath.Join(dir, "ca"), filepath.Join(dir, "n1")
	run := func(args ...string) (int, string, string) {
		var out, errb bytes.Buffer
		code := dispatch(args, &out, &errb)
		return code, out.String(), errb.String()
	}
	steps := []struct {
		name      string
		args      []string
		wantCode  int
		wantInOut string
		wantInErr string
	}{
		{"init", []string{"ca", "init", caDir}, 0, "written to " + caDir, ""},
		{"init again refuses", []string{"ca", "init", caDir}, 1, "", "refusing to overwrite"},
		{"issue", []string{"ca", "issue", "--ca", caDir, "--node", "n1", "--out", n1}, 0, "spiffe://cluster.local/meshless/node/n1", ""},
		{"reissue with options", []string{"ca", "issue", "--ca", caDir, "--node", "n1", "--out", n1, "--ttl", "2h", "--trust-domain", "prod.example"}, 0, "spiffe://prod.example/meshless/node/n1", ""},
		{"issue without node", []string{"ca", "issue", "--ca", caDir, "--out", n1}, 1, "", "want --ca, --node and --out"},
		{"bad trust domain", []string{"ca", "issue", "--ca", caDir, "--node", "n1", "--out", n1, "--trust-domain", "Bad"}, 1, "", "trust domain"},
		{"bad node name", []string{"ca", "issue", "--ca", caDir, "--node", "a/b", "--out", n1}, 1, "", "node id"},
		{"missing CA", []string{"ca", "issue", "--ca", filepath.Join(dir, "none"), "--node", "n1", "--out", n1}, 1, "", "no such file"},
		{"init without dir", []string{"ca", "init"}, 1, "", "want one directory"},
		{"unknown", []string{"ca", "rotate"}, 1, "", `unknown subcommand "rotate"`},
		{"flags after dir", []string{"ca", "init", filepath.Join(dir, "ca2"), "--ttl", "8760h"}, 0, "written to", ""},
	}
	for _, st := range steps {
		code, out, errs := run(st.args...)
		if code != st.wantCode || !strings.Contains(out, st.wantInOut) || !strings.Contains(errs, st.wantInErr) {
			t.Fatalf("%s: exit %d (want %d)\nstdout: %s\nstderr: %s", st.name, code, st.wantCode, out, errs)
		}
	}

	// The last successful issue: 2h, prod.example, modes as promised.
	m, err := identity.LoadMaterial(n1)
	if err != nil {
		t.Fatal(err)
	}
	if m.ID().String() != "spiffe://prod.example/meshless/node/n1" {
		t.Errorf("issued %s", m.ID())
	}
	if life := time.Until(m.NotAfter()); life > 2*time.Hour || life < 2*time.Hour-time.Minute {
		t.Errorf("lifetime %s, want 2h", life)
	}
	for path, want := range map[string]os.FileMode{
		caDir: 0o700, filepath.Join(caDir, "ca.key"): 0o600, filepath.Join(n1, "tls.key"): 0o600,
	} {
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != want {
			t.Errorf("%s: mode %o, want %o", path, fi.Mode().Perm(), want)
		}
	}
	ca2, err := identity.LoadCA(filepath.Join(dir, "ca2"))
	if err != nil {
		t.Fatal(err)
	}
	if life := time.Until(ca2.Certificate().NotAfter); life > 8760*time.Hour || life < 8759*time.Hour {
		t.Errorf("ca init --ttl after the directory: lifetime %s", life)
	}
}
