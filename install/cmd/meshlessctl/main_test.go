package main

import (
	"bytes"
	"path/filepath"
	"strings"
	"testing"
)

func TestDispatch(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "none.sock")
	tests := []struct {
		name      string
		args      []string
		wantCode  int
		wantInErr string
	}{
		{"no args", nil, 2, "usage"},
		{"help", []string{"help"}, 0, "status"},
		{"unknown", []string{"frobnicate"}, 2, `unknown command "frobnicate"`},
		{"status bad flag", []string{"status", "--nope"}, 1, "flag provided but not defined"},
		{"status unreachable", []string{"status", "--socket", missing, "--admin-addr", ""}, 1, "daemon not reachable on " + missing},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out, errb bytes.Buffer
			if code := dispatch(tt.args, &out, &errb); code != tt.wantCode {
				t.Errorf("exit %d, want %d; stderr %s", code, tt.wantCode, errb.String())
			}
			if !strings.Contains(errb.String(), tt.wantInErr) {
				t.Errorf("stderr %q lacks %q", errb.String(), tt.wantInErr)
			}
		})
	}
}
