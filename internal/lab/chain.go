package lab

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/plugins/pkg/ns"
)

// ChainConfig describes a conflist as an operator writes it: the reference
// bridge + host-local plugins with meshless-cni chained after them.
type ChainConfig struct {
	// CNIVersion defaults to 1.0.0, what containerd's default conflist uses.
	CNIVersion string
	// Network is the network name; "meshless-lab" when empty.
	Network string
	// Bridge is the bridge the bridge plugin creates in the node netns.
	Bridge string
	// Subnet is the host-local range, e.g. 198.19.1.0/24. The pod gets a
	// default route via the bridge's gateway address (.1).
	Subnet string
	// IPAMDir is host-local's dataDir (leases).
	IPAMDir string
	// CacheDir is libcni's cache (results kept for DEL and CHECK).
	CacheDir string
	// BinDir is the CNI_PATH: bridge, host-local, loopback, meshless-cni.
	BinDir string
	// Meshless is the meshless-cni entry's configuration; "type" is set.
	// Nil leaves meshless-cni out of the chain.
	Meshless map[string]any
	// NoPrimary leaves the bridge plugin out: meshless-cni alone.
	NoPrimary bool
}

// Chain runs a conflist through libcni from inside a node netns, exactly as
// containerd's CRI plugin drives it: the loopback network first, then the
// pod network.
type Chain struct {
	// NodeNetns is the path of the node netns the plugins run in.
	NodeNetns string
	// List is the pod network; Loopback is containerd's loopback network.
	List, Loopback *libcni.NetworkConfigList
	// CNI runs plugins from BinDir.
	CNI *libcni.CNIConfig
	// Config is the pod network's conflist as JSON.
	Config []byte
}

// Sandbox is one pod sandbox's runtime parameters, as the CRI plugin
// passes them.
type Sandbox struct {
	ContainerID string
	// Netns is the path of the pod's netns.
	Netns string
	// IfName defaults to eth0.
	IfName      string
	Namespace   string
	Name        string
	UID         string
	Annotations map[string]string
}

// NewChain builds the conflist and a libcni runner for plugins run inside
// the netns at nodeNetns.
func NewChain(nodeNetns string, c ChainConfig) (*Chain, error) {
	if c.CNIVersion == "" {
		c.CNIVersion = "1.0.0"
	}
	if c.Network == "" {
		c.Network = "meshless-lab"
	}
	var plugins []any
	if !c.NoPrimary {
		plugins = append(plugins, map[string]any{
			"type":      "bridge",
			"bridge":    c.Bridge,
			"isGateway": true,
			"ipMasq":    false,
			"ipam": map[string]any{
				"type":    "host-local",
				"ranges":  [][]map[string]string{{{"subnet": c.Subnet}}},
				"routes":  []map[string]string{{"dst": "0.0.0.0/0"}},
				"dataDir": c.IPAMDir,
			},
		})
	}
	if c.Meshless != nil {
		m := map[string]any{"type": "meshless-cni"}
		for k, v := range c.Meshless {
			m[k] = v
		}
		plugins = append(plugins, m)
	}
	conf, err := json.Marshal(map[string]any{"cniVersion": c.CNIVersion, "name": c.Network, "plugins": plugins})
	if err != nil {
		return nil, fmt.Errorf("encode conflist: %w", err)
	}
	list, err := libcni.NetworkConfFromBytes(conf)
	if err != nil {
		return nil, fmt.Errorf("parse conflist: %w", err)
	}
	lo, err := libcni.NetworkConfFromBytes([]byte(fmt.Sprintf(
		`{"cniVersion":%q,"name":"cni-loopback","plugins":[{"type":"loopback"}]}`, c.CNIVersion)))
	if err != nil {
		return nil, fmt.Errorf("parse loopback conflist: %w", err)
	}
	return &Chain{
		NodeNetns: nodeNetns,
		List:      list,
		Loopback:  lo,
		CNI:       libcni.NewCNIConfigWithCacheDir([]string{c.BinDir}, c.CacheDir, nil),
		Config:    conf,
	}, nil
}

// runtimeConf is the RuntimeConf containerd builds for a sandbox.
func (s Sandbox) runtimeConf(ifName string) *libcni.RuntimeConf {
	rt := &libcni.RuntimeConf{
		ContainerID: s.ContainerID,
		NetNS:       s.Netns,
		IfName:      ifName,
		Args: [][2]string{
			{"IgnoreUnknown", "1"},
			{"K8S_POD_NAMESPACE", s.Namespace},
			{"K8S_POD_NAME", s.Name},
			{"K8S_POD_INFRA_CONTAINER_ID", s.ContainerID},
			{"K8S_POD_UID", s.UID},
		},
	}
	if s.Annotations != nil {
		rt.CapabilityArgs = map[string]any{"io.kubernetes.cri.pod-annotations": s.Annotations}
	}
	return rt
}

func (s Sandbox) ifName() string {
	if s.IfName == "" {
		return "eth0"
	}
	return s.IfName
}

// in runs fn inside the node netns, so the plugins are born there.
func (c *Chain) in(fn func() error) error {
	h, err := ns.GetNS(c.NodeNetns)
	if err != nil {
		return fmt.Errorf("open node netns: %w", err)
	}
	defer h.Close()
	return h.Do(func(ns.NetNS) error { return fn() })
}

// Setup runs ADD of the loopback network, then of the pod network, as
// containerd does for a new sandbox.
func (c *Chain) Setup(ctx context.Context, s Sandbox) (types.Result, error) {
	var res types.Result
	err := c.in(func() error {
		if _, err := c.CNI.AddNetworkList(ctx, c.Loopback, s.runtimeConf("lo")); err != nil {
			return fmt.Errorf("loopback add: %w", err)
		}
		var err error
		res, err = c.CNI.AddNetworkList(ctx, c.List, s.runtimeConf(s.ifName()))
		return err
	})
	return res, err
}

// Teardown runs DEL of the pod network, then of the loopback network, and
// returns the first error after trying both.
func (c *Chain) Teardown(ctx context.Context, s Sandbox) error {
	return c.in(func() error {
		err := c.CNI.DelNetworkList(ctx, c.List, s.runtimeConf(s.ifName()))
		if lerr := c.CNI.DelNetworkList(ctx, c.Loopback, s.runtimeConf("lo")); err == nil && lerr != nil {
			err = fmt.Errorf("loopback del: %w", lerr)
		}
		return err
	})
}

// Add runs ADD over the pod network only.
func (c *Chain) Add(ctx context.Context, s Sandbox) (types.Result, error) {
	var res types.Result
	err := c.in(func() error {
		var err error
		res, err = c.CNI.AddNetworkList(ctx, c.List, s.runtimeConf(s.ifName()))
		return err
	})
	return res, err
}

// Check runs CHECK over the pod network.
func (c *Chain) Check(ctx context.Context, s Sandbox) error {
	return c.in(func() error { return c.CNI.CheckNetworkList(ctx, c.List, s.runtimeConf(s.ifName())) })
}

// Del runs DEL over the pod network only.
func (c *Chain) Del(ctx context.Context, s Sandbox) error {
	return c.in(func() error { return c.CNI.DelNetworkList(ctx, c.List, s.runtimeConf(s.ifName())) })
}

// Status runs STATUS (CNI 1.1.0) over the pod network.
func (c *Chain) Status(ctx context.Context) error {
	return c.in(func() error { return c.CNI.GetStatusNetworkList(ctx, c.List) })
}

// GC runs GC (CNI 1.1.0) over the pod network, keeping only valid.
func (c *Chain) GC(ctx context.Context, valid ...Sandbox) error {
	args := &libcni.GCArgs{}
	for _, s := range valid {
		args.ValidAttachments = append(args.ValidAttachments, types.GCAttachment{ContainerID: s.ContainerID, IfName: s.ifName()})
	}
	return c.in(func() error { return c.CNI.GCNetworkList(ctx, c.List, args) })
}

// String shows the pod network's conflist.
func (c *Chain) String() string { return string(c.Config) }

// nodeChain is the chain of lab node n.
func (s *State) nodeChain(n *NodeState) (*Chain, error) {
	return NewChain(NetnsPath(n.Netns), ChainConfig{
		Bridge:   podBridge,
		Subnet:   n.PodCIDR,
		IPAMDir:  filepath.Join(n.Dir, "ipam"),
		CacheDir: filepath.Join(n.Dir, "cni-cache"),
		BinDir:   s.CNIBinDir,
		Meshless: map[string]any{
			"daemonSocket": n.Socket,
			"logFile":      filepath.Join(n.Dir, "meshless-cni.log"),
		},
	})
}

// Every lab pod is in namespace PodNamespace and runs as its service
// account PodServiceAccount, so its identity is
// spiffe://cluster.local/ns/default/sa/default.
const (
	PodNamespace      = "default"
	PodServiceAccount = "default"
)

// k8sName is the pod's Kubernetes-style name, <node>-<pod>.
func (p *PodState) k8sName() string { return p.Node + "-" + p.Name }

// sandbox is the CNI view of lab pod p.
func (p *PodState) sandbox() Sandbox {
	return Sandbox{
		ContainerID: p.ContainerID,
		Netns:       NetnsPath(p.Netns),
		Namespace:   PodNamespace,
		Name:        p.k8sName(),
		UID:         p.UID,
	}
}
