package lab

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"

	"github.com/meshless/meshless/daemon/meshlet"
)

// DefaultRoot is the folder under which each lab keeps its own folder,
// /run/meshless-lab/<prefix>/, holding lab.json and every node's files.
const DefaultRoot = "/run/meshless-lab"

// DefaultName is the lab prefix when none is given.
const DefaultName = "ml"

// StateFile is the name of the lab's state file inside its folder.
const StateFile = "lab.json"

// namePattern keeps prefixes short and free of "-", so that one lab's
// netns names never match another lab's pattern.
var namePattern = regexp.MustCompile(`^[a-z][a-z0-9]{0,11}$`)

// ValidName reports whether name is usable as a lab prefix: a lowercase
// letter followed by up to 11 lowercase letters or digits.
func ValidName(name string) error {
	if !namePattern.MatchString(name) {
		return fmt.Errorf("invalid lab name %q: want [a-z][a-z0-9]{0,11}", name)
	}
	return nil
}

// State is what a lab made, as written to lab.json after every resource it
// creates, so that Down can undo a crashed or half-finished Up.
type State struct {
	// Name is the lab's prefix.
	Name string `json:"name"`
	// Dir is the lab's folder.
	Dir string `json:"dir"`
	// Meshlets are the registry's meshlets: (SetMeshlets).
	Meshlets []meshlet.Meshlet `json:"meshlets,omitempty"`
	// CADir holds the lab's CA (ca.crt, ca.key), outside every node's
	// folder: as on a real cluster, no node has the CA's key.
	CADir string `json:"caDir"`
	// BinDir holds meshlessd and meshless-cni.
	BinDir string `json:"binDir"`
	// CNIBinDir is the lab's CNI_PATH: symlinks to the reference plugins
	// and meshless-cni.
	CNIBinDir string `json:"cniBinDir"`
	// Underlay is the netns holding the underlay bridge.
	Underlay string `json:"underlay,omitempty"`
	// Registry is the registry file the daemons read.
	Registry string `json:"registry,omitempty"`
	// Nodes are the lab's nodes, in order.
	Nodes []*NodeState `json:"nodes"`
	// Service is the sample service in the registry.
	Service *ServiceState `json:"service,omitempty"`
	// Extra are further services of the registry (SetServices).
	Extra []ServiceState `json:"extra,omitempty"`
	// Ready is set once Up has finished.
	Ready bool `json:"ready"`
}

// NodeState is one node: a netns on the underlay running one meshlessd.
type NodeState struct {
	// Name is "n1", "n2", ...
	Name string `json:"name"`
	// Index is the node's number, 1-based.
	Index int `json:"index"`
	// Netns is the node's netns name, <prefix>-n<i>.
	Netns string `json:"netns"`
	// Address is the node's underlay and tunnel address, 198.18.0.<i>.
	Address string `json:"address"`
	// PodCIDR is the node's pod subnet, 198.19.<i>.0/24.
	PodCIDR string `json:"podCIDR"`
	// Dir is the node's folder: socket, daemon state, log, IPAM leases.
	Dir string `json:"dir"`
	// Socket is the daemon's CNI socket.
	Socket string `json:"socket"`
	// DaemonStateDir is the daemon's --state-dir.
	DaemonStateDir string `json:"daemonStateDir"`
	// Log is the daemon's stdout and stderr.
	Log string `json:"log"`
	// TLSDir is the daemon's --tls-dir: its node certificate, key and the
	// lab CA's bundle (never the CA's key).
	TLSDir string `json:"tlsDir"`
	// AdminAddr is the daemon's admin address inside the node netns.
	AdminAddr string `json:"adminAddr"`
	// PID is the daemon's process ID, 0 when not started.
	PID int `json:"pid,omitempty"`
	// ExtraArgs are further meshlessd flags (Options.DaemonArgs,
	// RestartDaemonWith).
	ExtraArgs []string `json:"extraArgs,omitempty"`
	// Pods are the node's pods, in order.
	Pods []*PodState `json:"pods"`
}

// PodState is one pod: a netns wired by the CNI chain.
type PodState struct {
	// Name is "p1", "p2", ...; the Kubernetes name is <node>-<name>.
	Name string `json:"name"`
	// Node is the node's name.
	Node string `json:"node"`
	// Netns is the pod's netns name, <prefix>-n<i>-p<j>.
	Netns string `json:"netns"`
	// ContainerID and UID are the sandbox identifiers given to CNI.
	ContainerID string `json:"containerID"`
	UID         string `json:"uid"`
	// IP is the pod's IPv4 address, empty until ADD succeeded.
	IP string `json:"ip,omitempty"`
	// Labels are the pod's labels in the registry's workloads
	// (meshless/meshlet, version): SetPodLabels.
	Labels map[string]string `json:"labels,omitempty"`
	// MeshletDir is the host folder the pod sees as /meshlet: its native
	// API socket (client/meshless) and its servers' sockets (server/).
	MeshletDir string `json:"meshletDir"`
}

// MeshletDir is the lab's root of the pods' Meshless folders, the
// daemons' --meshlet-dir: in the lab's folder, so labs never share one.
func (s *State) MeshletDir() string { return filepath.Join(s.Dir, "meshlet") }

// ServiceState is the sample service written to the registry.
type ServiceState struct {
	// Namespace and Name identify the service, default/web.
	Namespace string `json:"namespace"`
	Name      string `json:"name"`
	// VIP is the service's virtual IP, Port its port there.
	VIP  string `json:"vip"`
	Port int    `json:"port"`
	// TargetPort is the port on the endpoints.
	TargetPort int `json:"targetPort"`
	// Endpoints are the serving pods, as "n1/p1".
	Endpoints []string `json:"endpoints"`
}

// labDir returns the folder of lab name under root.
func labDir(root, name string) string { return filepath.Join(root, name) }

// save writes the state atomically.
func (s *State) save() error {
	b, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return fmt.Errorf("encode state: %w", err)
	}
	return writeFileAtomic(filepath.Join(s.Dir, StateFile), append(b, '\n'))
}

// loadState reads a lab's state file; a missing file is (nil, nil).
func loadState(dir string) (*State, error) {
	b, err := os.ReadFile(filepath.Join(dir, StateFile))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read state: %w", err)
	}
	var s State
	if err := json.Unmarshal(b, &s); err != nil {
		return nil, fmt.Errorf("decode state %s: %w", filepath.Join(dir, StateFile), err)
	}
	return &s, nil
}

// writeFileAtomic writes b to path through a temporary file and a rename,
// so readers (the daemons watching the registry) never see half a file.
func writeFileAtomic(path string, b []byte) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(b); err != nil {
		tmp.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Chmod(tmp.Name(), 0o644); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

// node returns the node called name, or nil.
func (s *State) node(name string) *NodeState {
	for _, n := range s.Nodes {
		if n.Name == name {
			return n
		}
	}
	return nil
}

// pod returns the pod "n1/p2", or nil.
func (s *State) pod(ref string) *PodState {
	for _, n := range s.Nodes {
		for _, p := range n.Pods {
			if n.Name+"/"+p.Name == ref {
				return p
			}
		}
	}
	return nil
}
