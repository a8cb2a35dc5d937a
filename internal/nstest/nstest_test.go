package nstest

import (
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
)

// childEUIDEnv carries the effective user ID that the child run of
// TestRequireRootChild pretends to have.
const childEUIDEnv = "MESHLESS_NSTEST_CHILD_EUID"

// TestRequireRootChild is run by TestRequireRoot in a child process, where
// a test that fails or skips can be observed from outside; on its own it
// does nothing.
func TestRequireRootChild(t *testing.T) {
	v := os.Getenv(childEUIDEnv)
	if v == "" {
		return
	}
	euid, err := strconv.Atoi(v)
	if err != nil {
		t.Fatal(err)
	}
	requireRoot(t, euid)
	t.Log("ran past RequireRoot")
}

// RequireRoot fails a test that is not root under CI=true, skips it
// otherwise, and lets root through, whatever CI says.
func TestRequireRoot(t *testing.T) {
	for _, tc := range []struct {
		euid int
		ci   string
		want string // the child's verdict line
		ok   bool   // the child exits 0
	}{
		{1000, "true", "--- FAIL: TestRequireRootChild", false},
		{1000, "", "--- SKIP: TestRequireRootChild", true},
		{1000, "false", "--- SKIP: TestRequireRootChild", true},
		{0, "true", "--- PASS: TestRequireRootChild", true},
		{0, "", "--- PASS: TestRequireRootChild", true},
	} {
		cmd := exec.Command(os.Args[0], "-test.run=^TestRequireRootChild$", "-test.count=1", "-test.v")
		// The parent may itself run under CI=true: the child gets only
		// the case's value.
		for _, kv := range os.Environ() {
			if !strings.HasPrefix(kv, "CI=") {
				cmd.Env = append(cmd.Env, kv)
			}
		}
		cmd.Env = append(cmd.Env, childEUIDEnv+"="+strconv.Itoa(tc.euid))
		if tc.ci != "" {
			cmd.Env = append(cmd.Env, "CI="+tc.ci)
		}
		out, err := cmd.CombinedOutput()
		if (err == nil) != tc.ok || !strings.Contains(string(out), tc.want) {
			t.Errorf("euid %d CI=%q: exit %v, want %s; output:\n%s", tc.euid, tc.ci, err, tc.want, out)
		}
		if tc.euid != 0 && !strings.Contains(string(out), "missing root") {
			t.Errorf("euid %d CI=%q: no reason given:\n%s", tc.euid, tc.ci, out)
		}
	}
}
