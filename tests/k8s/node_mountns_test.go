package k8s

// A node with the standard host paths (NodeOptions.HostDirs). Pods that
// mount host paths — the Meshless DaemonSet: /etc/cni/net.d, /opt/cni/bin,
// /run/meshless, /var/lib/meshless, /var/run/netns, /var/lib/kubelet/pods —
// must get the node's folders, never the machine's. So containerd, its
// shims and the kubelet run in a mount namespace of their own (held by a
// `sleep` started with `unshare --mount`: every mount in it private),
// where a folder under the node's dir is bind-mounted over each of those
// paths. The machine's paths are never written: only missing mount points
// are created there (empty folders, removed by cleanup).
//
// /run/netns is the node's own too: the pods' netns bind mounts stay in
// the node, as on a real one (the machine's /run/netns is shared by every
// test running on it, and the uninstall DaemonSet goes through all of the
// node's). The node's mounts are then made rshared, as systemd makes a
// node's, for the DaemonSet's HostToContainer mounts. The test reaches a pod netns through the holder
// of the mount namespace: /proc/<pid>/root/run/netns/cni-... (netnsPath).

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// hostDirs are the paths a HostDirs node has of its own: the CNI dirs,
// the kubelet's root, Meshless's runtime and state dirs (the DaemonSet's
// hostPath volumes), and what containerd 1.6 and libcni use whatever their
// configuration (the shims' socket dir, the result cache, the kubelet's
// container log symlinks).
var hostDirs = []string{
	"/etc/cni/net.d", "/opt/cni/bin", "/var/lib/kubelet", "/run/meshless",
	"/var/lib/meshless", "/run/containerd", "/var/lib/cni", "/run/netns",
	"/var/log/containers", // the kubelet's log symlinks, hard-coded
}

// HostPath returns where the node's folder for a host path (one of
// hostDirs, or below one) is on the machine: the test reads and writes
// the node's /etc/cni/net.d there. Other paths are returned as they are.
func (n *Node) HostPath(p string) string {
	if !n.hostDirs {
		return p
	}
	for _, d := range hostDirs {
		if p == d || strings.HasPrefix(p, d+"/") {
			return filepath.Join(n.Dir, "host", p)
		}
	}
	return p
}

// nodePath is the inverse of HostPath: the path, inside the node's mount
// namespace, of a folder of the node.
func (n *Node) nodePath(p string) string {
	if rest, ok := strings.CutPrefix(p, filepath.Join(n.Dir, "host")+"/"); ok && n.hostDirs {
		return "/" + rest
	}
	return p
}

// nsenterArgs are nsenter's arguments to run bin in the node's netns (and
// mount namespace, for a HostDirs node).
func (n *Node) nsenterArgs(bin string) []string {
	args := []string{"--net=" + n.Netns}
	if n.mountNS != nil {
		args = append(args, fmt.Sprintf("--mount=/proc/%d/ns/mnt", n.mountNS.cmd.Process.Pid))
	}
	return append(args, "--", bin)
}

// startMountNS makes the node's mount namespace and its bind mounts.
func (n *Node) startMountNS() {
	t := n.t
	for _, d := range hostDirs {
		n.mkdirOnMachine(d)
		if err := os.MkdirAll(n.HostPath(d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	// unshare execs sleep: the pid is the holder of the namespace.
	n.mountNS = startLogged(t, "mountns", filepath.Join(n.Dir, "mountns.log"),
		exec.Command("nsenter", "--net="+n.Netns, "--", "unshare", "--mount", "--propagation", "private", "--", "sleep", "infinity"))
	self, _ := os.Readlink("/proc/self/ns/mnt")
	pid := n.mountNS.cmd.Process.Pid
	waitUntil(t, "the node's mount namespace", 10*time.Second, func() (bool, string) {
		if n.mountNS.exited() {
			t.Fatalf("unshare exited:\n%s", tail(n.mountNS.log, 10))
		}
		ns, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/mnt", pid))
		comm, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
		return err == nil && ns != self && strings.TrimSpace(string(comm)) == "sleep", fmt.Sprint(ns, err)
	})
	mount := func(args ...string) {
		out, err := exec.Command("nsenter", append([]string{fmt.Sprintf("--mount=/proc/%d/ns/mnt", pid), "--", "mount"}, args...)...).CombinedOutput()
		if err != nil {
			t.Fatalf("mount %s in the node's mount namespace: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	for _, d := range hostDirs {
		mount("--bind", n.HostPath(d), d)
	}
	// containerd accepts a HostToContainer mount only from a shared or
	// slave mount, and looks /var/run/netns up without following the
	// /var/run symlink: the whole tree is made shared, as systemd makes a
	// node's. Shared within the node only: its copy of / is a peer of
	// nothing on the machine.
	mount("--make-rshared", "/")
}

// netnsPath returns a path of the netns that p (a path in the node, as
// crictl and meshlessd see it) names, usable from the test.
func (n *Node) netnsPath(p string) string {
	if n.mountNS == nil {
		return p
	}
	// /var/run is a symlink to /run, which would resolve against the
	// test's root, not the node's: resolve it here.
	if rest, ok := strings.CutPrefix(p, "/var/run/"); ok {
		p = "/run/" + rest
	}
	return fmt.Sprintf("/proc/%d/root%s", n.mountNS.cmd.Process.Pid, p)
}

// mkdirOnMachine creates the mount point p on the machine if it is
// missing, remembering each folder it creates.
func (n *Node) mkdirOnMachine(p string) {
	if _, err := os.Lstat(p); err == nil {
		return
	}
	n.mkdirOnMachine(filepath.Dir(p))
	if err := os.Mkdir(p, 0o755); err != nil && !errors.Is(err, os.ErrExist) {
		n.t.Fatal(err)
	}
	n.created = append(n.created, p)
}

// removeCreated removes the mount points mkdirOnMachine created, deepest
// first. They must be empty: anything in them was written to the
// machine's path instead of the node's.
func (n *Node) removeCreated() {
	for _, p := range slices.Backward(n.created) {
		if err := unix.Rmdir(p); err != nil && !errors.Is(err, unix.ENOENT) {
			ents, _ := os.ReadDir(p)
			n.t.Errorf("cleanup: rmdir %s: %v (%d entries written to the machine's path, not the node's)", p, err, len(ents))
		}
	}
	n.created = nil
}

// ServeKubernetesService makes the apiserver reachable at the ClusterIP
// and port of the Service default/kubernetes from the node and its pods,
// as kube-proxy would: in-cluster clients (the DaemonSet's meshlessd, the
// signer) dial KUBERNETES_SERVICE_HOST:PORT. The address is on the node
// netns's loopback; pods reach it through their default route (the
// bridge's gateway in the node netns). The apiserver's serving certificate
// names that address (its first Service IP).
func (n *Node) ServeKubernetesService() string {
	t := n.t
	svc, err := n.c.Client.CoreV1().Services("default").Get(t.Context(), "kubernetes", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	ip, port := svc.Spec.ClusterIP, svc.Spec.Ports[0].Port
	n.inNetns("ip", "addr", "add", ip+"/32", "dev", "lo")
	addr := fmt.Sprintf("%s:%d", ip, port)
	n.proxyToAPIServer(addr)
	return addr
}
