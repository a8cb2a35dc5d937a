// Package lab builds the local lab: a small cluster made of network
// namespaces, for tests, `make demo` and benchmarks. Nothing is added to the
// host's netns.
//
//	<prefix>-underlay   netns holding bridge ul0 (the "switch")
//	<prefix>-n<i>       node i: eth0 198.18.0.<i>/24 on ul0, meshlessd,
//	                    pod bridge cni0 198.19.<i>.1/24 (bridge plugin),
//	                    routes 198.19.<j>.0/24 via 198.18.0.<j> (host-gw)
//	<prefix>-n<i>-p<j>  pod j of node i, wired by libcni from inside the
//	                    node netns: loopback, then bridge + host-local with
//	                    meshless-cni chained after, as containerd does
//
// Every node runs its own meshlessd inside its netns (tunnel 198.18.0.<i>:15008,
// admin 127.0.0.1:15020 on the node's loopback), reading a registry file
// with the nodes and the sample service default/web (VIP 198.18.100.10:80 to
// port 8080 of pod p1 of every node). Files live in /run/meshless-lab/<prefix>/;
// lab.json records each resource as soon as it exists, so Down undoes a
// crashed Up too.
//
//	l, err := lab.Up(ctx, lab.Options{Nodes: 2, Pods: 2, BinDir: "bin"})
//	defer l.Down(ctx)
//	p, _ := l.Pod("n2/p1")
//	err = l.InPod("n1/p1", func() error { c, err := net.Dial("tcp", p.IP.String()+":8080"); ... })
package lab

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
)

// Options configure Up.
type Options struct {
	// Name is the lab's prefix; DefaultName when empty.
	Name string
	// Nodes and Pods (per node) default to 2 each.
	Nodes, Pods int
	// BinDir holds meshlessd and meshless-cni; DefaultBinDir when empty.
	BinDir string
	// CNIBinDir holds bridge, host-local and loopback; DefaultCNIBinDir
	// when empty.
	CNIBinDir string
	// Root is the folder of labs; DefaultRoot when empty.
	Root string
	// Log receives progress lines; nil discards them.
	Log io.Writer
	// DaemonArgs are further meshlessd flags for every node's daemon,
	// e.g. --pprof or --race-fanout 1 (benchmarks).
	DaemonArgs []string
	// KeepOnError leaves what a failed Up made, for inspection; by default
	// a failed Up tears it down.
	KeepOnError bool
}

// Lab is a running lab.
type Lab struct {
	mu  sync.Mutex
	st  *State
	log io.Writer
}

// Up builds a lab and returns once every daemon is ready and every pod is
// wired. It fails if a lab with the same name exists.
func Up(ctx context.Context, o Options) (*Lab, error) {
	if o.Name == "" {
		o.Name = DefaultName
	}
	if err := ValidName(o.Name); err != nil {
		return nil, err
	}
	if o.Nodes == 0 {
		o.Nodes = 2
	}
	if o.Pods == 0 {
		o.Pods = 2
	}
	if o.Nodes < 1 || o.Nodes > 250 || o.Pods < 1 || o.Pods > 250 {
		return nil, fmt.Errorf("want 1-250 nodes and 1-250 pods per node, got %d and %d", o.Nodes, o.Pods)
	}
	if o.Root == "" {
		o.Root = DefaultRoot
	}
	if o.Log == nil {
		o.Log = io.Discard
	}
	var err error
	if o.BinDir == "" {
		if o.BinDir, err = DefaultBinDir(); err != nil {
			return nil, err
		}
	}
	if o.BinDir, err = filepath.Abs(o.BinDir); err != nil {
		return nil, fmt.Errorf("bin dir: %w", err)
	}
	if o.CNIBinDir == "" {
		o.CNIBinDir = DefaultCNIBinDir(o.BinDir)
	}
	dir := labDir(o.Root, o.Name)
	if fileExists(dir) {
		return nil, fmt.Errorf("lab %q exists (%s): run lab down --name %s first", o.Name, dir, o.Name)
	}
	if left, _ := labNetns(o.Name); len(left) > 0 {
		return nil, fmt.Errorf("lab %q has leftover netns %v: run lab down --name %s first", o.Name, left, o.Name)
	}
	if err := os.MkdirAll(o.Root, 0o755); err != nil {
		return nil, fmt.Errorf("lab root: %w", err)
	}
	// Mkdir, not MkdirAll: the folder is the lab's lock against a second Up.
	if err := os.Mkdir(dir, 0o755); errors.Is(err, os.ErrExist) {
		return nil, fmt.Errorf("lab %q exists (%s): run lab down --name %s first", o.Name, dir, o.Name)
	} else if err != nil {
		return nil, fmt.Errorf("lab dir: %w", err)
	}
	l := &Lab{log: o.Log, st: &State{
		Name:      o.Name,
		Dir:       dir,
		BinDir:    o.BinDir,
		CNIBinDir: filepath.Join(dir, "cni-bin"),
		Registry:  filepath.Join(dir, "registry.yaml"),
	}}
	if err := l.st.save(); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	if err := l.up(ctx, o); err != nil {
		if !o.KeepOnError {
			if derr := l.Down(context.WithoutCancel(ctx)); derr != nil {
				err = fmt.Errorf("%w (and cleaning up: %v)", err, derr)
			}
		}
		return nil, fmt.Errorf("lab up %s: %w", o.Name, err)
	}
	return l, nil
}

// up makes the lab's resources in order, recording each in the state.
func (l *Lab) up(ctx context.Context, o Options) error {
	s := l.st
	if err := makeCNIBinDir(s.CNIBinDir, o.BinDir, o.CNIBinDir); err != nil {
		return err
	}
	s.Underlay = o.Name + "-underlay"
	if err := createNetns(s.Underlay); err != nil {
		return err
	}
	if err := s.save(); err != nil {
		return err
	}
	if err := setupUnderlay(s.Underlay); err != nil {
		return err
	}
	for i := 1; i <= o.Nodes; i++ {
		n := &NodeState{
			Name: fmt.Sprintf("n%d", i), Index: i,
			Netns:   fmt.Sprintf("%s-n%d", o.Name, i),
			Address: nodeAddr(i), PodCIDR: nodePodCIDR(i),
			Dir:       filepath.Join(s.Dir, fmt.Sprintf("n%d", i)),
			AdminAddr: "127.0.0.1:15020",
			ExtraArgs: append(append([]string(nil), o.DaemonArgs...), EnvDaemonArgs()...),
		}
		n.Socket = filepath.Join(n.Dir, "run", "cni.sock")
		n.DaemonStateDir = filepath.Join(n.Dir, "state")
		n.Log = filepath.Join(n.Dir, "meshlessd.log")
		n.TLSDir = filepath.Join(n.Dir, "tls")
		if err := os.MkdirAll(n.Dir, 0o755); err != nil {
			return fmt.Errorf("node dir: %w", err)
		}
		if err := createNetns(n.Netns); err != nil {
			return err
		}
		s.Nodes = append(s.Nodes, n)
		if err := s.save(); err != nil {
			return err
		}
		if err := setupNode(s.Underlay, n); err != nil {
			return err
		}
		fmt.Fprintf(l.log, "node %s: netns %s, address %s, pods %s\n", n.Name, n.Netns, n.Address, n.PodCIDR)
	}
	for _, n := range s.Nodes {
		if err := addHostGWRoutes(n, s.Nodes); err != nil {
			return err
		}
	}
	s.Service = &ServiceState{
		Namespace: ServiceNamespace, Name: ServiceName, VIP: ServiceVIP,
		Port: ServicePort, TargetPort: ServiceTargetPort,
	}
	for _, n := range s.Nodes {
		s.Service.Endpoints = append(s.Service.Endpoints, n.Name+"/p1")
	}
	if err := s.writeRegistry(); err != nil {
		return err
	}
	if err := s.issueTLS(); err != nil {
		return err
	}
	for _, n := range s.Nodes {
		if err := s.startDaemon(n); err != nil {
			return err
		}
	}
	for _, n := range s.Nodes {
		if err := waitReady(ctx, n); err != nil {
			return err
		}
		fmt.Fprintf(l.log, "daemon %s: pid %d ready, tunnel %s:15008, admin %s (in %s), log %s\n",
			n.Name, n.PID, n.Address, n.AdminAddr, n.Netns, n.Log)
	}
	for _, n := range s.Nodes {
		chain, err := s.nodeChain(n)
		if err != nil {
			return err
		}
		for j := 1; j <= o.Pods; j++ {
			if err := l.addPod(ctx, chain, n, j); err != nil {
				return err
			}
		}
	}
	if err := s.writeRegistry(); err != nil {
		return err
	}
	s.Ready = true
	if err := s.save(); err != nil {
		return err
	}
	fmt.Fprintf(l.log, "service %s/%s: %s:%d -> %d on %v\n", s.Service.Namespace, s.Service.Name,
		s.Service.VIP, s.Service.Port, s.Service.TargetPort, s.Service.Endpoints)
	return nil
}

// addPod makes pod j of node n: its netns, then CNI ADD through the chain.
func (l *Lab) addPod(ctx context.Context, chain *Chain, n *NodeState, j int) error {
	s := l.st
	p := &PodState{
		Name: fmt.Sprintf("p%d", j), Node: n.Name,
		Netns:       fmt.Sprintf("%s-%s-p%d", s.Name, n.Name, j),
		ContainerID: fmt.Sprintf("%s-%s-p%d-%s", s.Name, n.Name, j, randomHex(6)),
		UID:         randomUID(),
	}
	p.MeshletDir = filepath.Join(s.MeshletDir(), PodNamespace, p.k8sName())
	if err := createNetns(p.Netns); err != nil {
		return err
	}
	n.Pods = append(n.Pods, p)
	if err := s.save(); err != nil {
		return err
	}
	res, err := chain.Setup(ctx, p.sandbox())
	if err != nil {
		return fmt.Errorf("cni add %s/%s: %w; plugin log %s", n.Name, p.Name, err, filepath.Join(n.Dir, "meshless-cni.log"))
	}
	ip, err := resultIPv4(res)
	if err != nil {
		return fmt.Errorf("cni add %s/%s: %w", n.Name, p.Name, err)
	}
	p.IP = ip.String()
	if err := s.save(); err != nil {
		return err
	}
	fmt.Fprintf(l.log, "pod %s/%s: netns %s, ip %s, k8s default/%s\n", n.Name, p.Name, p.Netns, p.IP, p.sandbox().Name)
	return nil
}

// resultIPv4 returns the first IPv4 address of a CNI result.
func resultIPv4(res types.Result) (netip.Addr, error) {
	r, err := current.NewResultFromResult(res)
	if err != nil {
		return netip.Addr{}, fmt.Errorf("convert result: %w", err)
	}
	for _, ipc := range r.IPs {
		if a, ok := netip.AddrFromSlice(ipc.Address.IP); ok && a.Unmap().Is4() {
			return a.Unmap(), nil
		}
	}
	return netip.Addr{}, fmt.Errorf("no IPv4 address in result")
}

// randomHex returns n random bytes in hex.
func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// randomUID returns a random UUID-shaped pod UID.
func randomUID() string {
	h := randomHex(16)
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:32]
}

// DaemonArgsEnv names an environment variable of further meshlessd flags
// (space-separated) for every lab daemon, after Options.DaemonArgs: a way
// to run whole suites with a daemon option, e.g.
// MESHLESS_DAEMON_ARGS=--sockmap go test ./tests/mesh/.
const DaemonArgsEnv = "MESHLESS_DAEMON_ARGS"

// EnvDaemonArgs returns the flags of $MESHLESS_DAEMON_ARGS.
func EnvDaemonArgs() []string { return strings.Fields(os.Getenv(DaemonArgsEnv)) }
