package harness

import (
	"strings"
	"testing"

	"github.com/meshless/meshless/internal/lab"
)

// Tail returns the last n lines of s, for logs in failure messages.
func Tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// LabPod returns the lab pod ref ("n1/p2"), failing t if there is none.
func LabPod(t testing.TB, l *lab.Lab, ref string) lab.Pod {
	t.Helper()
	p, err := l.Pod(ref)
	if err != nil {
		t.Fatal(err)
	}
	return p
}
