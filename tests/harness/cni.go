package harness

import (
	"context"
	"errors"
	"path/filepath"
	"testing"

	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/plugins/pkg/ns"

	"github.com/meshless/meshless/internal/lab"
)

// ChainOptions describe a conflist: the reference bridge + host-local
// plugins with meshless-cni chained after them, as an operator writes it.
type ChainOptions struct {
	CNIVersion string
	// Bridge is the bridge the bridge plugin creates in the node netns.
	Bridge string
	// Subnet is the host-local range, e.g. 198.19.1.0/24.
	Subnet string
	// Meshless is the meshless-cni entry's configuration; "type" is set.
	// Nil leaves meshless-cni out of the chain.
	Meshless map[string]any
	// StateDir holds host-local's leases and libcni's cache.
	StateDir string
	// NoPrimary leaves the primary plugin out: meshless-cni alone, which
	// it must refuse.
	NoPrimary bool
}

// Pod is one sandbox's runtime parameters.
type Pod = lab.Sandbox

// Chain runs a conflist through libcni from inside a node netns, exactly as
// containerd's CRI plugin drives it (the lab's chain, with test-friendly
// signatures).
type Chain struct {
	*lab.Chain
}

// NewChain builds the conflist and a libcni runner over bins.CNIDir.
func NewChain(t testing.TB, bins Bins, node ns.NetNS, o ChainOptions) *Chain {
	t.Helper()
	if o.StateDir == "" {
		o.StateDir = t.TempDir()
	}
	c, err := lab.NewChain(node.Path(), lab.ChainConfig{
		CNIVersion: o.CNIVersion,
		Network:    "meshless-test",
		Bridge:     o.Bridge,
		Subnet:     o.Subnet,
		IPAMDir:    filepath.Join(o.StateDir, "ipam"),
		CacheDir:   filepath.Join(o.StateDir, "cache"),
		BinDir:     bins.CNIDir,
		Meshless:   o.Meshless,
		NoPrimary:  o.NoPrimary,
	})
	if err != nil {
		t.Fatalf("conflist: %v", err)
	}
	return &Chain{c}
}

// Add runs ADD over the whole chain.
func (c *Chain) Add(p Pod) (types.Result, error) { return c.Chain.Add(context.Background(), p) }

// Check runs CHECK over the whole chain.
func (c *Chain) Check(p Pod) error { return c.Chain.Check(context.Background(), p) }

// Del runs DEL over the whole chain.
func (c *Chain) Del(p Pod) error { return c.Chain.Del(context.Background(), p) }

// Status runs STATUS (CNI 1.1.0).
func (c *Chain) Status() error { return c.Chain.Status(context.Background()) }

// GC runs GC (CNI 1.1.0) keeping only valid.
func (c *Chain) GC(valid ...Pod) error { return c.Chain.GC(context.Background(), valid...) }

// CNIErrorCode returns the CNI error code of err, or -1 when err is not a
// CNI error.
func CNIErrorCode(err error) int {
	var te *types.Error
	if errors.As(err, &te) {
		return int(te.Code)
	}
	return -1
}
