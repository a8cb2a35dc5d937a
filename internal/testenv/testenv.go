// Package testenv decides what a test does when something it needs from
// the machine is missing: root, a program, a built binary. On a
// developer's machine the test is skipped, saying what to install; under
// CI=true (the CI runs `make test` so) it fails, because CI must have it
// and a CI that lost it would otherwise pass without running the test.
//
//	if _, err := exec.LookPath("nft"); err != nil {
//		testenv.Missing(t, "nft (Debian nftables): run `make deps`")
//	}
package testenv

import (
	"os"
	"testing"
	"time"
)

// Missing ends t because what it needs is absent: t.Fatal under CI=true,
// t.Skip otherwise. what says what is missing and how to get it.
func Missing(t testing.TB, what string) {
	t.Helper()
	if MustFail(os.Getenv) {
		t.Fatalf("missing %s (CI=true: a CI must provide it, so this fails instead of skipping)", what)
	}
	t.Skipf("skipped: missing %s", what)
}

// MustFail reports whether a missing requirement fails the test rather
// than skipping it: when the environment, read through getenv, has
// CI=true.
func MustFail(getenv func(string) string) bool { return getenv("CI") == "true" }

// Eventually polls cond every few milliseconds until it returns nil, and
// fails t with cond's last error once timeout passed. Tests wait for a
// state this way, never by sleeping: cond says when the state is reached,
// the interval is only how often it is asked.
func Eventually(t testing.TB, timeout time.Duration, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("condition not met within %v: %v", timeout, err)
		}
		<-tick.C
	}
}
