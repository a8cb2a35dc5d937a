package testenv

import (
	"testing"
)

func TestMustFail(t *testing.T) {
	for ci, want := range map[string]bool{"true": true, "": false, "false": false, "1": false, "TRUE": false} {
		getenv := func(k string) string {
			if k == "CI" {
				return ci
			}
			return ""
		}
		if got := MustFail(getenv); got != want {
			t.Errorf("CI=%q: MustFail = %v, want %v", ci, got, want)
		}
	}
}
