package harness

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"testing"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/plugins/pkg/ns"
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

// Chain runs a conflist through libcni from inside a node netns, exactly as
// containerd's CRI plugin drives it.
type Chain struct {
	Node   ns.NetNS
	List   *libcni.NetworkConfigList
	CNI    *libcni.CNIConfig
	Config []byte
}

// NewChain builds the conflist and a libcni runner over bins.CNIDir.
func NewChain(t testing.TB, bins Bins, node ns.NetNS, o ChainOptions) *Chain {
	t.Helper()
	if o.StateDir == "" {
		o.StateDir = t.TempDir()
	}
	plugins := []any{map[string]any{
		"type":      "bridge",
		"bridge":    o.Bridge,
		"isGateway": true,
		"ipam": map[string]any{
			"type":    "host-local",
			"ranges":  [][]map[string]string{{{"subnet": o.Subnet}}},
			"dataDir": filepath.Join(o.StateDir, "ipam"),
		},
	}}
	if o.NoPrimary {
		plugins = nil
	}
	if o.Meshless != nil {
		m := map[string]any{"type": "meshless-cni"}
		for k, v := range o.Meshless {
			m[k] = v
		}
		plugins = append(plugins, m)
	}
	conf, err := json.Marshal(map[string]any{
		"cniVersion": o.CNIVersion,
		"name":       "meshless-test",
		"plugins":    plugins,
	})
	if err != nil {
		t.Fatal(err)
	}
	list, err := libcni.NetworkConfFromBytes(conf)
	if err != nil {
		t.Fatalf("parse conflist: %v\n%s", err, conf)
	}
	return &Chain{
		Node:   node,
		List:   list,
		CNI:    libcni.NewCNIConfigWithCacheDir([]string{bins.CNIDir}, filepath.Join(o.StateDir, "cache"), nil),
		Config: conf,
	}
}

// Pod is one sandbox's runtime parameters.
type Pod struct {
	ContainerID string
	Netns       string
	IfName      string
	Namespace   string
	Name        string
	UID         string
	Annotations map[string]string
}

func (p Pod) runtimeConf() *libcni.RuntimeConf {
	rt := &libcni.RuntimeConf{
		ContainerID: p.ContainerID,
		NetNS:       p.Netns,
		IfName:      p.IfName,
		Args: [][2]string{
			{"IgnoreUnknown", "1"},
			{"K8S_POD_NAMESPACE", p.Namespace},
			{"K8S_POD_NAME", p.Name},
			{"K8S_POD_INFRA_CONTAINER_ID", p.ContainerID},
			{"K8S_POD_UID", p.UID},
		},
	}
	if rt.IfName == "" {
		rt.IfName = "eth0"
	}
	if p.Annotations != nil {
		rt.CapabilityArgs = map[string]any{"io.kubernetes.cri.pod-annotations": p.Annotations}
	}
	return rt
}

func (c *Chain) in(fn func() error) error {
	return c.Node.Do(func(ns.NetNS) error { return fn() })
}

// Add runs ADD over the whole chain.
func (c *Chain) Add(p Pod) (types.Result, error) {
	var res types.Result
	err := c.in(func() error {
		var err error
		res, err = c.CNI.AddNetworkList(context.Background(), c.List, p.runtimeConf())
		return err
	})
	return res, err
}

// Check runs CHECK over the whole chain.
func (c *Chain) Check(p Pod) error {
	return c.in(func() error { return c.CNI.CheckNetworkList(context.Background(), c.List, p.runtimeConf()) })
}

// Del runs DEL over the whole chain.
func (c *Chain) Del(p Pod) error {
	return c.in(func() error { return c.CNI.DelNetworkList(context.Background(), c.List, p.runtimeConf()) })
}

// Status runs STATUS (CNI 1.1.0).
func (c *Chain) Status() error {
	return c.in(func() error { return c.CNI.GetStatusNetworkList(context.Background(), c.List) })
}

// GC runs GC (CNI 1.1.0) keeping only valid.
func (c *Chain) GC(valid ...Pod) error {
	args := &libcni.GCArgs{}
	for _, p := range valid {
		rt := p.runtimeConf()
		args.ValidAttachments = append(args.ValidAttachments, types.GCAttachment{ContainerID: rt.ContainerID, IfName: rt.IfName})
	}
	return c.in(func() error { return c.CNI.GCNetworkList(context.Background(), c.List, args) })
}

// CNIErrorCode returns the CNI error code of err, or -1 when err is not a
// CNI error.
func CNIErrorCode(err error) int {
	var te *types.Error
	if errors.As(err, &te) {
		return int(te.Code)
	}
	return -1
}

// String shows the conflist.
func (c *Chain) String() string { return fmt.Sprintf("%s", c.Config) }
