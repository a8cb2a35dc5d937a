// Package harness starts the real Meshless binaries and drives the CNI
// chain for the project's integration tests.
//
//	bins := harness.Binaries(t)        // bin/ from `make build`, or built now
//	d := harness.StartDaemon(t, bins, harness.DaemonOptions{})
//	defer d.Stop()
package harness

import (
	"testing"

	"github.com/meshless/meshless/internal/testbins"
)

// Bins locates the executables tests run (see internal/testbins).
type Bins = testbins.Bins

// Binaries returns the binaries, building what the environment does not
// provide.
func Binaries(t testing.TB) Bins { return testbins.Get(t) }
