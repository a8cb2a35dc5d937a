package harness

import (
	"strings"
	"testing"
	"time"

	"github.com/meshless/meshless/internal/lab"
)

// Eventually polls cond every 10 ms until it returns nil, failing t with
// cond's last error after timeout. The interval is a polling period, not
// synchronisation: cond says when the state is reached.
func Eventually(t testing.TB, timeout time.Duration, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("not within %v: %v", timeout, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

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
