package lab

import (
	"testing"

	"github.com/meshless/meshless/internal/testbins"
)

// testBins returns the bin dir (meshlessd, meshless-cni) and the reference
// plugins' dir (see internal/testbins).
func testBins(t *testing.T) (binDir, cniDir string) {
	t.Helper()
	b := testbins.Get(t)
	return b.Dir, b.RefDir
}
