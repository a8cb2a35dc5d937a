package lab

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/netip"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/meshless/meshless/daemon/meshlet"
)

// Open returns the running lab called name under root (DefaultRoot when
// empty), as recorded in its lab.json.
func Open(name, root string) (*Lab, error) {
	if err := ValidName(name); err != nil {
		return nil, err
	}
	if root == "" {
		root = DefaultRoot
	}
	st, err := loadState(labDir(root, name))
	if err != nil {
		return nil, err
	}
	if st == nil {
		return nil, fmt.Errorf("no lab %q (no %s)", name, filepath.Join(labDir(root, name), StateFile))
	}
	return &Lab{st: st, log: io.Discard}, nil
}

// Name returns the lab's prefix.
func (l *Lab) Name() string { return l.st.Name }

// Dir returns the lab's folder.
func (l *Lab) Dir() string { return l.st.Dir }

// Registry returns the path of the registry file the daemons read.
func (l *Lab) Registry() string { return l.st.Registry }

// InUnderlay runs fn on an OS thread inside the underlay's netns, where
// the nodes' network is: a socket made there sees the traffic between
// nodes (a capture).
func (l *Lab) InUnderlay(fn func() error) error { return inNetns(l.st.Underlay, fn) }

// Pod is one pod of the lab.
type Pod struct {
	// Ref is "n1/p2": node and pod.
	Ref string
	// Node is the node's name.
	Node string
	// Name is the Kubernetes pod name (namespace default), e.g. "n1-p2".
	Name string
	// Netns is the netns name; NetnsPath its bind mount.
	Netns, NetnsPath string
	// IP is the pod's IPv4 address.
	IP netip.Addr
	// ContainerID and UID are the sandbox identifiers given to CNI.
	ContainerID, UID string
	// MeshletDir is the host folder the pod sees as /meshlet (apps of the
	// lab use it as is: set native.Dialer.Dir or $MESHLESS_NATIVE_DIR).
	MeshletDir string
}

// Node is one node of the lab and its daemon.
type Node struct {
	// Name is "n1", ...; Index its number.
	Name  string
	Index int
	// Netns is the node's netns name.
	Netns string
	// Address is the node's underlay and tunnel address.
	Address netip.Addr
	// PodCIDR is the node's pod subnet.
	PodCIDR netip.Prefix
	// PID is the daemon's process ID.
	PID int
	// Socket is the daemon's CNI socket; AdminAddr its admin address
	// inside the node netns; Log its log file.
	Socket, AdminAddr, Log string
	// TLSDir is the daemon's TLS material (--tls-dir).
	TLSDir string
}

// Pods returns every pod, node by node.
func (l *Lab) Pods() []Pod {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []Pod
	for _, n := range l.st.Nodes {
		for _, p := range n.Pods {
			out = append(out, p.public())
		}
	}
	return out
}

// Pod returns the pod ref, "n1/p2".
func (l *Lab) Pod(ref string) (Pod, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	p := l.st.pod(ref)
	if p == nil {
		return Pod{}, fmt.Errorf("no pod %q in lab %s", ref, l.st.Name)
	}
	return p.public(), nil
}

func (p *PodState) public() Pod {
	ip, _ := netip.ParseAddr(p.IP)
	return Pod{
		Ref: p.Node + "/" + p.Name, Node: p.Node, Name: p.sandbox().Name,
		Netns: p.Netns, NetnsPath: NetnsPath(p.Netns), IP: ip,
		ContainerID: p.ContainerID, UID: p.UID, MeshletDir: p.MeshletDir,
	}
}

// Nodes returns every node.
func (l *Lab) Nodes() []Node {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make([]Node, 0, len(l.st.Nodes))
	for _, n := range l.st.Nodes {
		out = append(out, n.public())
	}
	return out
}

// Node returns node i (1-based).
func (l *Lab) Node(i int) (Node, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if i < 1 || i > len(l.st.Nodes) {
		return Node{}, fmt.Errorf("no node %d in lab %s", i, l.st.Name)
	}
	return l.st.Nodes[i-1].public(), nil
}

func (n *NodeState) public() Node {
	a, _ := netip.ParseAddr(n.Address)
	c, _ := netip.ParsePrefix(n.PodCIDR)
	return Node{
		Name: n.Name, Index: n.Index, Netns: n.Netns, Address: a, PodCIDR: c,
		PID: n.PID, Socket: n.Socket, AdminAddr: n.AdminAddr, Log: n.Log, TLSDir: n.TLSDir,
	}
}

// Do runs fn on an OS thread inside the node's netns.
func (n Node) Do(fn func() error) error { return inNetns(n.Netns, fn) }

// Get fetches path (e.g. "/readyz") from the daemon's admin endpoint, from
// inside the node's netns.
func (n Node) Get(ctx context.Context, path string) (int, string, error) {
	code, b, err := httpGet(ctx, n.Netns, n.AdminAddr, path)
	return code, string(b), err
}

// Metrics returns the daemon's /metrics text.
func (n Node) Metrics(ctx context.Context) (string, error) {
	code, body, err := n.Get(ctx, "/metrics")
	if err != nil {
		return "", err
	}
	if code != http.StatusOK {
		return "", fmt.Errorf("get /metrics on %s: %d %s", n.Name, code, body)
	}
	return body, nil
}

// Metric returns the value of the sample whose line starts with series,
// e.g. `meshless_connections_total{direction="outbound",path="remote"}`,
// or 0 when there is none.
func (n Node) Metric(ctx context.Context, series string) (float64, error) {
	body, err := n.Metrics(ctx)
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(body, "\n") {
		if rest, ok := strings.CutPrefix(line, series+" "); ok {
			var v float64
			if _, err := fmt.Sscan(rest, &v); err != nil {
				return 0, fmt.Errorf("metric %s: %w", series, err)
			}
			return v, nil
		}
	}
	return 0, nil
}

// InPod runs fn on an OS thread inside the pod's netns: sockets fn makes
// belong to the pod. fn must not hand work needing the netns to other
// goroutines.
func (l *Lab) InPod(ref string, fn func() error) error {
	p, err := l.Pod(ref)
	if err != nil {
		return err
	}
	return inNetns(p.Netns, fn)
}

// Start starts cmd inside the pod's netns, unmodified, as a container
// would run it; the caller waits for it.
func (l *Lab) Start(ref string, cmd *exec.Cmd) error {
	p, err := l.Pod(ref)
	if err != nil {
		return err
	}
	return startIn(p.Netns, cmd)
}

// Run runs cmd inside the pod's netns and waits for it.
func (l *Lab) Run(ref string, cmd *exec.Cmd) error {
	if err := l.Start(ref, cmd); err != nil {
		return err
	}
	return cmd.Wait()
}

// startIn starts cmd from a thread inside the named netns: the child is
// born there.
func startIn(netnsName string, cmd *exec.Cmd) error {
	if err := inNetns(netnsName, cmd.Start); err != nil {
		return fmt.Errorf("start %s in %s: %w", cmd.Path, netnsName, err)
	}
	return nil
}

// SetPodLabels gives pod ref these labels in the registry (Meshlet
// membership: meshless/meshlet; version) and rewrites it; the daemons
// pick the change up within their registry poll.
func (l *Lab) SetPodLabels(ref string, labels map[string]string) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	p := l.st.pod(ref)
	if p == nil {
		return fmt.Errorf("no pod %q", ref)
	}
	p.Labels = maps.Clone(labels)
	if err := l.st.save(); err != nil {
		return err
	}
	return l.st.writeRegistry()
}

// SetServices makes svcs the registry's services besides the sample one
// (namespace default when empty; endpoints as "n1/p2") and rewrites it.
func (l *Lab) SetServices(svcs []ServiceState) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.st.Extra = nil
	for _, svc := range svcs {
		if svc.Namespace == "" {
			svc.Namespace = PodNamespace
		}
		l.st.Extra = append(l.st.Extra, svc)
	}
	if err := l.st.save(); err != nil {
		return err
	}
	return l.st.writeRegistry()
}

// SetMeshlets makes ms the registry's Meshlets and rewrites it.
func (l *Lab) SetMeshlets(ms []meshlet.Meshlet) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.st.Meshlets = slices.Clone(ms)
	if err := l.st.save(); err != nil {
		return err
	}
	return l.st.writeRegistry()
}

// KillDaemon kills the node's daemon with SIGKILL, as a crash would.
func (l *Lab) KillDaemon(node string) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := l.st.node(node)
	if n == nil {
		return fmt.Errorf("no node %q in lab %s", node, l.st.Name)
	}
	if !isLabDaemon(n.PID, n) {
		return nil
	}
	if err := unix.Kill(n.PID, unix.SIGKILL); err != nil && !errors.Is(err, unix.ESRCH) {
		return fmt.Errorf("kill meshlessd on %s: %w", node, err)
	}
	if !waitGone(n.PID, stopTimeout) {
		return fmt.Errorf("meshlessd on %s (pid %d) survived SIGKILL", node, n.PID)
	}
	return nil
}

// RestartDaemon stops the node's daemon (SIGTERM), starts a new one over
// the same state and waits until it is ready.
func (l *Lab) RestartDaemon(ctx context.Context, node string) error {
	return l.restartDaemon(ctx, node, nil)
}

// RestartDaemonWith is RestartDaemon with extra replacing the further
// meshlessd flags of the node (Options.DaemonArgs), e.g. to switch
// --race-fanout between benchmark runs.
func (l *Lab) RestartDaemonWith(ctx context.Context, node string, extra []string) error {
	if extra == nil {
		extra = []string{}
	}
	return l.restartDaemon(ctx, node, extra)
}

func (l *Lab) restartDaemon(ctx context.Context, node string, extra []string) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := l.st.node(node)
	if n == nil {
		return fmt.Errorf("no node %q in lab %s", node, l.st.Name)
	}
	if isLabDaemon(n.PID, n) {
		if err := stopPID(n.PID); err != nil {
			return fmt.Errorf("stop meshlessd on %s: %w", node, err)
		}
	}
	if extra != nil {
		n.ExtraArgs = append([]string(nil), extra...)
	}
	if err := l.st.startDaemon(n); err != nil {
		return err
	}
	return waitReady(ctx, n)
}
