package k8s

// The real-node harness: a kubelet and containerd (Debian's, with its CRI
// plugin) running as one Kubernetes node inside a network namespace of its
// own, with the CNI chain bridge + host-local + meshless-cni from a conf
// dir, as on a real node.
//
// Isolation. containerd, the kubelet and meshlessd run in the node's netns
// only (nsenter --net), in the host's mount namespace: the pod netns bind
// mounts containerd makes under /run/netns must be visible to meshlessd,
// and `ip netns exec` would give each its own mount namespace. The bridge,
// the pods' veths and the node address (nodeIP on a veth, node0) live in that
// netns, so nothing is added to the host netns. The kubelet and meshlessd
// reach the apiserver, which listens on host loopback, through a TCP proxy
// the test opens on 127.0.0.1:6443 inside the node netns; the test reaches
// meshlessd's admin endpoint by dialing from inside the netns.
//
// Cleanup (pass or fail), by pid: kubelet; every CRI sandbox (stop and
// remove: containers, CNI DEL, shm, netns); containerd; then whatever is
// left in the node or pod netns (shims, containers) is killed; mounts under
// the node's directory and the pods' netns files are unmounted; the
// kernel settings the kubelet changes are restored; the directory and the
// netns (with the bridge) are removed.

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"golang.org/x/sys/unix"

	"github.com/meshless/meshless/internal/idtest"
	"github.com/meshless/meshless/internal/nstest"
	"github.com/meshless/meshless/internal/testenv"
	"github.com/meshless/meshless/tests/harness"
)

const (
	// nodeName is the kubelet's --hostname-override and meshlessd's
	// --node-name.
	nodeName = "meshless-node"
	// nodeIP is the node's InternalIP (on link node0 in the node netns);
	// meshlessd's tunnel listens on nodeIP:15008.
	nodeIP = "198.18.50.1"
	// The bridge plugin's pod subnet on the node.
	podSubnet  = "198.19.50.0/24"
	podGateway = "198.19.50.1"
	// e2eImage holds /pause (its entrypoint: the sandbox image),
	// /demo-server and /demo-client, all static.
	e2eImage = "meshless.local/e2e:1"
	// nodeAPIAddr is where the apiserver proxy listens in the node netns.
	nodeAPIAddr = "127.0.0.1:6443"
)

// kernelTunables are what the kubelet sets at start (protectKernelDefaults
// false); the harness restores them.
var kernelTunables = []string{
	"vm/overcommit_memory", "vm/panic_on_oom", "kernel/panic", "kernel/panic_on_oops",
	"kernel/keys/root_maxkeys", "kernel/keys/root_maxbytes",
}

// Node is one real Kubernetes node: containerd + kubelet in a netns.
type Node struct {
	t    *testing.T
	c    *Cluster
	bins harness.Bins

	Name, IP string
	// Dir holds everything the node writes: containerd's root, state and
	// socket, the kubelet's root and pod logs, CNI dirs, meshlessd's dir.
	Dir string
	// Netns is the path of the node's network namespace.
	Netns string
	// CRISock is containerd's socket.
	CRISock               string
	CNIBinDir, CNIConfDir string
	// Kubeconfig is an admin kubeconfig usable inside the node netns.
	Kubeconfig string
	// DaemonDir is meshlessd's directory: its socket is DaemonDir/run/cni.sock,
	// the daemonSocket install-cni wrote into the conflist.
	DaemonDir string
	// PluginLog is meshless-cni's logFile.
	PluginLog string
	// MeshletDir is meshlessd's --meshlet-dir: the DaemonSet's (the
	// kubelet's emptyDir of each pod) under this kubelet's root dir.
	MeshletDir string

	crictlBin           string
	containerd, kubelet *proc
	// hostDirs: see NodeOptions; mountNS holds the node's mount
	// namespace, created, the folders created on the machine for its bind
	// mounts (removed by cleanup).
	hostDirs bool
	mountNS  *proc
	created  []string
	proxies  []net.Listener
	sysctls  map[string]string
	podNetns map[string]bool
	// hostPaths are the paths outside Dir the node creates when they are
	// missing, and that were missing at start: removed by cleanup.
	hostPaths []string
}

// nodeHostPaths are created outside Dir whatever the configuration: the
// shims' socket dir (containerd 1.6 hard-codes /run/containerd/s), the
// kubelet's device-plugin socket dir and container log symlinks
// (hard-coded), libcni's result cache (containerd 1.6 does not set its
// cache dir) and the CRI's cgroup parent
// k8s.io in each cgroup v1 hierarchy. A HostDirs node has the first four
// in its own mount namespace.
func nodeHostPaths(hostDirs bool) []string {
	ps := []string{"/run/containerd", "/var/lib/kubelet", "/var/lib/cni", "/var/log/containers"}
	if hostDirs {
		ps = nil
	}
	hs, _ := filepath.Glob("/sys/fs/cgroup/*")
	for _, h := range hs {
		if fi, err := os.Lstat(h); err == nil && fi.IsDir() {
			ps = append(ps, filepath.Join(h, "k8s.io"))
		}
	}
	return ps
}

// lockNodes serializes the real-node tests of every checkout on this
// machine for the duration of t: containerd 1.6 and the kubelet share a
// few host paths whatever their configuration (see nodeHostPaths), which
// cleanup removes. The lock is flock(2) on containerd's binary: nothing to
// create, nothing left behind.
func lockNodes(t *testing.T) {
	t.Helper()
	bin, err := exec.LookPath("containerd")
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(bin)
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Now()
	for unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB) != nil {
		if time.Since(t0) > 5*time.Minute {
			f.Close()
			t.Fatalf("another real-node test holds the lock on %s for 5 min", bin)
		}
		time.Sleep(500 * time.Millisecond) // polling the lock
	}
	if d := time.Since(t0); d > time.Second {
		t.Logf("waited %v for another real-node test to end", d.Round(time.Millisecond))
	}
	t.Cleanup(func() { f.Close() }) // releases the lock, after the node's cleanup
}

// nodeBins returns kubelet's and crictl's directory, or skips (fails under
// CI=true) when a part of the node is missing.
func nodeBins(t *testing.T, c *Cluster) {
	t.Helper()
	var missing []string
	for _, b := range []string{"kubelet", "crictl"} {
		if _, err := os.Stat(filepath.Join(c.bin, b)); err != nil {
			missing = append(missing, b)
		}
	}
	for _, b := range []string{"containerd", "containerd-shim-runc-v2", "runc", "ctr", "nsenter", "ip"} {
		if _, err := exec.LookPath(b); err != nil {
			missing = append(missing, b)
		}
	}
	if len(missing) > 0 {
		testenv.Missing(t, fmt.Sprintf("%s for the real-node test: run `make kube-bins` (builds kubelet and crictl, installs containerd and runc)", strings.Join(missing, ", ")))
	}
}

// StartNode starts containerd and the kubelet in a new netns and waits
// until the Node is Ready. meshlessd is not started (see StartDaemon).
func StartNode(t *testing.T, c *Cluster, bins harness.Bins) *Node {
	t.Helper()
	return StartNodeWith(t, c, bins, NodeOptions{})
}

// NodeOptions change how StartNodeWith lays the node out.
type NodeOptions struct {
	// HostDirs runs containerd and the kubelet in a mount namespace of
	// their own where the node's folders are bind-mounted over the
	// standard host paths (hostDirs): the CNI dirs, the kubelet's root,
	// Meshless's. Pods that mount host paths (the DaemonSet) then get the
	// node's, never the machine's; the conflist is left without
	// meshless-cni (the DaemonSet's installer adds it); the kubelet keeps
	// its default root dir.
	HostDirs bool
}

// StartNodeWith is StartNode with options.
func StartNodeWith(t *testing.T, c *Cluster, bins harness.Bins, o NodeOptions) *Node {
	t.Helper()
	nstest.RequireRoot(t)
	nodeBins(t, c)
	lockNodes(t)
	start := time.Now()
	dir, err := os.MkdirTemp("", "meshless-node-")
	if err != nil {
		t.Fatal(err)
	}
	n := &Node{
		t: t, c: c, bins: bins, Name: nodeName, IP: nodeIP, Dir: dir,
		CRISock:    filepath.Join(dir, "containerd.sock"),
		CNIBinDir:  filepath.Join(dir, "cni", "bin"),
		CNIConfDir: filepath.Join(dir, "cni", "net.d"),
		Kubeconfig: filepath.Join(dir, "node.kubeconfig"),
		DaemonDir:  filepath.Join(dir, "meshlessd"),
		PluginLog:  filepath.Join(dir, "meshless-cni.log"),
		MeshletDir: manifestMeshletDir(t, filepath.Join(dir, "kubelet")),
		crictlBin:  filepath.Join(c.bin, "crictl"),
		podNetns:   map[string]bool{},
		hostDirs:   o.HostDirs,
	}
	if o.HostDirs {
		n.CNIBinDir, n.CNIConfDir = n.HostPath("/opt/cni/bin"), n.HostPath("/etc/cni/net.d")
	}
	for _, p := range nodeHostPaths(o.HostDirs) {
		if _, err := os.Lstat(p); errors.Is(err, os.ErrNotExist) {
			n.hostPaths = append(n.hostPaths, p)
		}
	}
	// The netns is removed (with the bridge and veths in it) after
	// n.cleanup, which is registered later and so runs first. It is made
	// by `ip netns add`, not in this process: a Go thread that unshares
	// and then exits (as nstest.New does) would fire the parent-death
	// signal of every process this test started from that thread, the
	// apiserver included.
	nsName := filepath.Base(dir)
	if out, err := exec.Command("ip", "netns", "add", nsName).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add %s: %v\n%s", nsName, err, out)
	}
	n.Netns = "/run/netns/" + nsName
	t.Cleanup(func() {
		if out, err := exec.Command("ip", "netns", "delete", nsName).CombinedOutput(); err != nil {
			t.Errorf("ip netns delete %s: %v\n%s", nsName, err, out)
		}
	})
	t.Cleanup(n.cleanup)
	n.inNetns("ip", "link", "set", "lo", "up")

	// The node address, on a link standing for the node's NIC (a veth pair
	// with both ends in the netns: the kernel here has no dummy links), and
	// a default route through it, as a node has.
	for _, args := range [][]string{
		{"link", "add", "node0", "type", "veth", "peer", "name", "node0-peer"},
		{"addr", "add", nodeIP + "/24", "dev", "node0"},
		{"link", "set", "node0-peer", "up"},
		{"link", "set", "node0", "up"},
		{"route", "add", "default", "via", "198.18.50.254", "dev", "node0"},
	} {
		n.inNetns("ip", args...)
	}
	if n.hostDirs {
		n.startMountNS()
	}
	n.proxyToAPIServer(nodeAPIAddr)
	writeFile(t, n.Kubeconfig, []byte(c.kubeconfigAt("https://"+nodeAPIAddr, adminToken)))

	n.setupCNI()
	n.startContainerd()
	t0 := time.Now()
	n.importImage()
	t.Logf("image %s built and imported in %v", e2eImage, time.Since(t0).Round(time.Millisecond))
	n.startKubelet()
	t.Logf("node %s (%s, netns %s) Ready in %v; dir %s", n.Name, n.IP, n.Netns, time.Since(start).Round(time.Millisecond), n.Dir)
	return n
}

// StartDaemon starts meshlessd in the node netns with the node's
// kubeconfig, node name and tunnel address, on the socket the conflist
// names. Restarting reuses DaemonDir.
func (n *Node) StartDaemon() *harness.Daemon {
	n.t.Helper()
	// The daemon runs as a host process with a static token here, which
	// the signer would refuse (it wants a pod-bound token): its TLS
	// material comes from a test CA, as for a standalone node.
	tlsDir := filepath.Join(n.DaemonDir, "tls")
	if _, err := os.Stat(filepath.Join(tlsDir, "tls.crt")); err != nil {
		idtest.NewCA(n.t).Issue(n.t, n.Name, tlsDir)
	}
	return harness.StartDaemon(n.t, n.bins, harness.DaemonOptions{
		Dir:       n.DaemonDir,
		NodeName:  n.Name,
		NetnsPath: n.Netns,
		Args: []string{"--kubeconfig", n.Kubeconfig, "--tunnel-addr", net.JoinHostPort(n.IP, "15008"), "--tls-dir", tlsDir,
			"--meshlet-dir", n.MeshletDir},
	})
}

// inNetns runs a command inside the node netns and fails t on error.
func (n *Node) inNetns(name string, args ...string) string {
	n.t.Helper()
	out, err := exec.Command("nsenter", append([]string{"--net=" + n.Netns, "--", name}, args...)...).CombinedOutput()
	if err != nil {
		n.t.Fatalf("%s %s in the node netns: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// proxyToAPIServer forwards addr, inside the node netns, to the
// apiserver on host loopback.
func (n *Node) proxyToAPIServer(addr string) net.Listener {
	l, err := harness.ListenInNetns(n.Netns, "tcp", addr)
	if err != nil {
		n.t.Fatalf("apiserver proxy on %s: %v", addr, err)
	}
	n.proxies = append(n.proxies, l)
	target := strings.TrimPrefix(n.c.APIURL(), "https://")
	go func() {
		for {
			in, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer in.Close()
				out, err := net.DialTimeout("tcp", target, 5*time.Second)
				if err != nil {
					return
				}
				defer out.Close()
				done := make(chan struct{}, 2)
				go func() { io.Copy(out, in); out.(*net.TCPConn).CloseWrite(); done <- struct{}{} }()
				go func() { io.Copy(in, out); in.(*net.TCPConn).CloseWrite(); done <- struct{}{} }()
				<-done
				<-done
			}()
		}
	}()
	return l
}

// setupCNI writes the primary conflist (bridge + host-local, state in Dir)
// and runs `meshlessctl install-cni` to add meshless-cni after it.
func (n *Node) setupCNI() {
	t := n.t
	for _, d := range []string{n.CNIBinDir, n.CNIConfDir, n.DaemonDir} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for _, p := range []string{"bridge", "host-local", "loopback"} {
		if err := os.Symlink(filepath.Join(n.bins.RefDir, p), filepath.Join(n.CNIBinDir, p)); err != nil {
			t.Fatal(err)
		}
	}
	conf := fmt.Sprintf(`{
  "cniVersion": "1.0.0",
  "name": "meshless-e2e",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "mlbr0",
      "isGateway": true,
      "ipMasq": false,
      "ipam": {
        "type": "host-local",
        "dataDir": %q,
        "ranges": [[{"subnet": %q, "gateway": %q}]],
        "routes": [{"dst": "0.0.0.0/0"}]
      }
    }
  ]
}
`, filepath.Join(n.Dir, "cni", "ipam"), podSubnet, podGateway)
	list := filepath.Join(n.CNIConfDir, "10-meshless-e2e.conflist")
	writeFile(t, list, []byte(conf))
	if n.hostDirs {
		return // the DaemonSet's installer chains meshless-cni
	}

	socket := filepath.Join(n.DaemonDir, "run", "cni.sock")
	snippet, _ := json.Marshal(map[string]any{"daemonSocket": socket, "logFile": n.PluginLog})
	out, err := exec.Command(n.bins.Path("meshlessctl"), "install-cni",
		"--plugin-bin", n.bins.Path("meshless-cni"),
		"--cni-bin-dir", n.CNIBinDir, "--cni-conf-dir", n.CNIConfDir,
		"--plugin-config", string(snippet)).CombinedOutput()
	if err != nil {
		t.Fatalf("meshlessctl install-cni: %v\n%s", err, out)
	}
	checkMeshlessChain(t, list, socket)
	if _, err := os.Stat(filepath.Join(n.CNIBinDir, "meshless-cni")); err != nil {
		t.Fatalf("install-cni did not install the binary: %v", err)
	}
}

func (n *Node) startContainerd() {
	t := n.t
	p := func(elem ...string) string { return filepath.Join(append([]string{n.Dir, "containerd"}, elem...)...) }
	cri := `"io.containerd.grpc.v1.cri"`
	cfg := fmt.Sprintf(`version = 2
root = %q
state = %q

[grpc]
  address = %q

[ttrpc]
  address = %q

[plugins]
  [plugins."io.containerd.internal.v1.opt"]
    path = %q
  [plugins.%s]
    sandbox_image = %q
    restrict_oom_score_adj = true
    disable_apparmor = true
    enable_unprivileged_ports = false
    enable_unprivileged_icmp = false
    stream_server_address = "127.0.0.1"
    stream_server_port = "0"
    [plugins.%s.cni]
      bin_dir = %q
      conf_dir = %q
      max_conf_num = 1
    [plugins.%s.containerd]
      snapshotter = "overlayfs"
      default_runtime_name = "runc"
      [plugins.%s.containerd.runtimes.runc]
        runtime_type = "io.containerd.runc.v2"
        [plugins.%s.containerd.runtimes.runc.options]
          Root = %q
          SystemdCgroup = false
`, p("root"), p("state"), n.CRISock, n.CRISock+".ttrpc", p("opt"),
		cri, pauseImage, cri, n.nodePath(n.CNIBinDir), n.nodePath(n.CNIConfDir), cri, cri, cri, p("runc"))
	writeFile(t, p("config.toml"), []byte(cfg))
	n.containerd = n.startProc("containerd", "containerd", "--config", p("config.toml"), "--log-level", "info")
	deadline := time.Now().Add(30 * time.Second)
	for {
		if n.containerd.exited() {
			t.Fatalf("containerd exited:\n%s", tail(n.containerd.log, 40))
		}
		if _, err := n.ctr("version"); err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("containerd not up after 30s:\n%s", tail(n.containerd.log, 40))
		}
		time.Sleep(100 * time.Millisecond) // polling interval
	}
}

func (n *Node) ctr(args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "ctr", append([]string{"--address", n.CRISock, "--namespace", "k8s.io"}, args...)...).CombinedOutput()
	return string(out), err
}

// Crictl runs crictl against the node's containerd.
func (n *Node) Crictl(args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	ep := "unix://" + n.CRISock
	cmd := exec.CommandContext(ctx, n.crictlBin, append([]string{"--runtime-endpoint", ep, "--image-endpoint", ep, "--timeout", "30s"}, args...)...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if err != nil {
		return stdout.String(), fmt.Errorf("crictl %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return stdout.String(), nil
}

func (n *Node) startKubelet() {
	t := n.t
	n.sysctls = map[string]string{}
	for _, k := range kernelTunables {
		if b, err := os.ReadFile("/proc/sys/" + k); err == nil {
			n.sysctls[k] = strings.TrimSpace(string(b))
		}
	}
	root := filepath.Join(n.Dir, "kubelet")
	if n.hostDirs {
		root = "/var/lib/kubelet"
	}
	cfg := fmt.Sprintf(`apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
failCgroupV1: false
cgroupDriver: cgroupfs
cgroupsPerQOS: false
enforceNodeAllocatable: []
failSwapOn: false
containerRuntimeEndpoint: unix://%s
address: 127.0.0.1
port: 10250
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: 10248
authentication:
  anonymous: {enabled: true}
  webhook: {enabled: false}
authorization: {mode: AlwaysAllow}
evictionHard:
  memory.available: "1Mi"
  nodefs.available: "1%%"
  nodefs.inodesFree: "1%%"
  imagefs.available: "1%%"
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
podLogsDir: %s
volumePluginDir: %s
resolvConf: /etc/resolv.conf
syncFrequency: 10s
fileCheckFrequency: 5s
nodeStatusUpdateFrequency: 5s
serializeImagePulls: false
`, n.CRISock, filepath.Join(n.Dir, "pod-logs"), filepath.Join(n.Dir, "volume-plugins"))
	writeFile(t, filepath.Join(n.Dir, "kubelet.yaml"), []byte(cfg))
	n.kubelet = n.startProc("kubelet", filepath.Join(n.c.bin, "kubelet"),
		"--config="+filepath.Join(n.Dir, "kubelet.yaml"),
		"--kubeconfig="+n.Kubeconfig,
		"--hostname-override="+n.Name,
		"--node-ip="+n.IP,
		"--root-dir="+root,
		"--cert-dir="+filepath.Join(root, "pki"),
		"--v=2",
	)
	deadline := time.Now().Add(120 * time.Second)
	var last string
	for {
		if n.kubelet.exited() {
			t.Fatalf("kubelet exited:\n%s", tail(n.kubelet.log, 60))
		}
		node, err := n.c.Client.CoreV1().Nodes().Get(context.Background(), n.Name, metav1.GetOptions{})
		if err == nil {
			for _, c := range node.Status.Conditions {
				if c.Type == corev1.NodeReady {
					if c.Status == corev1.ConditionTrue {
						return
					}
					last = c.Reason + ": " + c.Message
				}
			}
		} else {
			last = err.Error()
		}
		if time.Now().After(deadline) {
			t.Fatalf("node %s not Ready after 120s (%s)\nkubelet:\n%s\ncontainerd:\n%s", n.Name, last, tail(n.kubelet.log, 40), tail(n.containerd.log, 20))
		}
		time.Sleep(200 * time.Millisecond) // polling interval
	}
}

// startProc starts a process in the node netns, logging into Dir.
func (n *Node) startProc(name, bin string, args ...string) *proc {
	n.t.Helper()
	// nsenter enters the namespaces and execs bin: the pid is bin's.
	cmd := exec.Command("nsenter", append(n.nsenterArgs(bin), args...)...)
	return startLogged(n.t, name, filepath.Join(n.Dir, name+".log"), cmd)
}

// SandboxNetns returns the netns path of the running sandbox of the pod,
// from `crictl inspectp`.
func (n *Node) SandboxNetns(ns, name string) (id, path string, err error) {
	out, err := n.Crictl("pods", "--namespace", ns, "--name", "^"+name+"$", "--state", "ready", "-q")
	if err != nil {
		return "", "", err
	}
	ids := strings.Fields(out)
	if len(ids) != 1 {
		return "", "", fmt.Errorf("%d ready sandboxes for %s/%s", len(ids), ns, name)
	}
	path, err = n.inspectNetns(ids[0])
	return ids[0], path, err
}

func (n *Node) inspectNetns(id string) (string, error) {
	out, err := n.Crictl("inspectp", id)
	if err != nil {
		return "", err
	}
	var info struct {
		Info struct {
			RuntimeSpec struct {
				Linux struct {
					Namespaces []struct {
						Type string `json:"type"`
						Path string `json:"path"`
					} `json:"namespaces"`
				} `json:"linux"`
			} `json:"runtimeSpec"`
		} `json:"info"`
	}
	if err := json.Unmarshal([]byte(out), &info); err != nil {
		return "", fmt.Errorf("crictl inspectp %s: %w", id, err)
	}
	for _, ns := range info.Info.RuntimeSpec.Linux.Namespaces {
		if ns.Type == "network" && ns.Path != "" {
			n.podNetns[ns.Path] = true
			return ns.Path, nil
		}
	}
	return "", fmt.Errorf("sandbox %s: no network namespace path in inspectp", id)
}

// PodLog returns the log of the first run of a container of a pod, as the
// kubelet wrote it (CRI log format).
func (n *Node) PodLog(pod *corev1.Pod, container string) (string, error) {
	b, err := os.ReadFile(filepath.Join(n.Dir, "pod-logs", fmt.Sprintf("%s_%s_%s", pod.Namespace, pod.Name, pod.UID), container, "0.log"))
	return string(b), err
}

// cleanup removes everything the node made, pass or fail.
func (n *Node) cleanup() {
	t := n.t
	if t.Failed() {
		for _, p := range []*proc{n.kubelet, n.containerd} {
			if p != nil {
				t.Logf("---- last lines of %s (%s) ----\n%s", p.name, p.log, tail(p.log, 40))
			}
		}
		t.Logf("---- meshless-cni log (%s) ----\n%s", n.PluginLog, tail(n.PluginLog, 30))
	}
	t0 := time.Now()
	n.kubelet.stop(false)
	// Every sandbox through the CRI: containers stopped, CNI DEL, shm
	// unmounted, netns removed.
	if n.containerd != nil && !n.containerd.exited() {
		out, err := n.Crictl("pods", "-q")
		if err != nil {
			t.Errorf("cleanup: list sandboxes: %v", err)
		}
		for _, id := range strings.Fields(out) {
			_, _ = n.inspectNetns(id) // remembered for the checks below
			if out, err := n.Crictl("stopp", id); err != nil {
				t.Logf("cleanup: stopp %s: %v %s", id, err, out)
			}
			if out, err := n.Crictl("rmp", "-f", id); err != nil {
				t.Errorf("cleanup: rmp %s: %v %s", id, err, out)
			}
		}
	}
	n.containerd.stop(false)
	for _, l := range n.proxies {
		l.Close()
	}
	// The holder of a HostDirs node's mount namespace is in the node
	// netns: killed here, after its view of the pods' netns was used.
	if k := n.killLeftovers(); len(k) > 0 {
		t.Logf("cleanup: killed leftover processes %v", k)
	}
	n.mountNS.stop(true)
	n.removeCreated()
	for _, m := range n.leftoverMounts() {
		if err := unix.Unmount(m, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
			t.Errorf("cleanup: unmount %s: %v", m, err)
		}
	}
	for p := range n.podNetns {
		if err := os.Remove(p); err == nil {
			t.Logf("cleanup: removed leftover netns %s", p)
		}
	}
	for k, v := range n.sysctls {
		if b, err := os.ReadFile("/proc/sys/" + k); err == nil && strings.TrimSpace(string(b)) != v {
			if err := os.WriteFile("/proc/sys/"+k, []byte(v), 0o644); err != nil {
				t.Errorf("cleanup: restore %s=%s: %v", k, v, err)
			}
		}
	}
	if m := n.leftoverMounts(); len(m) > 0 {
		t.Errorf("cleanup: mounts left, not removing %s: %v", n.Dir, m)
		return
	}
	for _, p := range n.hostPaths {
		var err error
		if strings.HasPrefix(p, "/sys/fs/cgroup/") {
			err = removeCgroup(p)
		} else {
			err = os.RemoveAll(p)
		}
		if err != nil {
			t.Errorf("cleanup: %v", err)
		}
	}
	if t.Failed() && os.Getenv("MESHLESS_KEEP_NODE_DIR") != "" {
		t.Logf("cleanup: keeping %s", n.Dir)
	} else if err := os.RemoveAll(n.Dir); err != nil {
		t.Errorf("cleanup: %v", err)
	}
	t.Logf("node cleaned up in %v", time.Since(t0).Round(time.Millisecond))
}

// removeCgroup removes a cgroup v1 directory and its children, deepest
// first (they hold no processes once the node's are gone).
func removeCgroup(dir string) error {
	ents, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	for _, e := range ents {
		if e.IsDir() {
			if err := removeCgroup(filepath.Join(dir, e.Name())); err != nil {
				return err
			}
		}
	}
	if err := unix.Rmdir(dir); err != nil && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("rmdir %s: %w", dir, err)
	}
	return nil
}

// killLeftovers SIGKILLs, by pid, every process still in the node netns or
// a pod netns of this node, or started for this node's containerd (shims).
func (n *Node) killLeftovers() []int {
	inodes := map[uint64]bool{}
	for _, p := range append([]string{n.Netns}, keys(n.podNetns)...) {
		if p != n.Netns {
			p = n.netnsPath(p)
		}
		var st unix.Stat_t
		if unix.Stat(p, &st) == nil {
			inodes[st.Ino] = true
		}
	}
	self := os.Getpid()
	var killed []int
	for range 3 {
		ents, _ := os.ReadDir("/proc")
		found := false
		for _, e := range ents {
			pid, err := strconv.Atoi(e.Name())
			if err != nil || pid == self {
				continue
			}
			mine := false
			var st unix.Stat_t
			if unix.Stat(fmt.Sprintf("/proc/%d/ns/net", pid), &st) == nil && inodes[st.Ino] {
				mine = true
			}
			if cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid)); err == nil && bytes.Contains(cmdline, []byte(n.Dir+"/")) {
				mine = true
			}
			if mine {
				found = true
				_ = syscall.Kill(pid, syscall.SIGKILL)
				if !slices.Contains(killed, pid) {
					killed = append(killed, pid)
				}
			}
		}
		if !found {
			break
		}
		time.Sleep(200 * time.Millisecond) // until no process of ours is left
	}
	return killed
}

// leftoverMounts lists, deepest first, the mount points under Dir and the
// pods' netns files.
func (n *Node) leftoverMounts() []string {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil
	}
	defer f.Close()
	var ms []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 5 {
			continue
		}
		mp := unescapeMount(fields[4])
		if strings.HasPrefix(mp, n.Dir+"/") || mp == n.Dir || n.podNetns[mp] || n.podNetns[strings.Replace(mp, "/run/", "/var/run/", 1)] {
			ms = append(ms, mp)
		}
	}
	slices.Reverse(ms)
	return ms
}

func unescapeMount(s string) string {
	// mountinfo escapes space, tab, newline and backslash as \ooo.
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

func keys[V any](m map[string]V) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	return ks
}
