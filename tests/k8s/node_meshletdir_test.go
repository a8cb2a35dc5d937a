package k8s

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"golang.org/x/sys/unix"

	"github.com/meshless/meshless/daemon/meshlet"
	"github.com/meshless/meshless/daemon/meshletdir"
	"github.com/meshless/meshless/internal/testenv"
)

// manifestMeshletDir is meshlessd's --meshlet-dir in
// install/kubernetes/meshless.yaml, with the kubelet's default root dir
// /var/lib/kubelet replaced by kubeletRoot: the node test runs the
// DaemonSet's layout, not one of its own.
func manifestMeshletDir(t *testing.T, kubeletRoot string) string {
	t.Helper()
	root, err := repoRoot()
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(root, "install", "kubernetes", "meshless.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`--meshlet-dir=(/var/lib/kubelet/\S+)`).FindSubmatch(b)
	if m == nil {
		t.Fatal("meshless.yaml: no --meshlet-dir=/var/lib/kubelet/... for meshlessd")
	}
	return kubeletRoot + strings.TrimPrefix(string(m[1]), "/var/lib/kubelet")
}

// testMeshletDir: with the webhook in place (the signer binary, as in
// testWebhook), a pod of a Meshlet whose spec has no volume runs; the
// kubelet's emptyDir is on the node where the DaemonSet's --meshlet-dir
// says for the pod's UID; the container sees that folder at /meshlet
// (the same inode, through /proc/PID/root); and the unix socket its app
// made there, /meshlet/server/native, answers from the node.
func testMeshletDir(ctx context.Context, t *testing.T, c *Cluster, n *Node, ns string) {
	startWebhookSigner(ctx, t, c)
	// The rest of TestKubernetes runs without the webhook: no
	// configuration left that refuses pods of a Meshlet.
	t.Cleanup(func() {
		_ = c.Client.AdmissionregistrationV1().MutatingWebhookConfigurations().Delete(context.Background(), "meshless", metav1.DeleteOptions{})
	})
	spec := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "native-1", Labels: map[string]string{"app": "native", meshlet.LabelMeshlet: "native"}},
		Spec: podSpec(corev1.RestartPolicyAlways, "server",
			"/demo-server", "--listen", ":8080", "--unix", "/meshlet/server/native", "--name", "native-1"),
	}
	if len(spec.Spec.Volumes)+len(spec.Spec.Containers[0].VolumeMounts) != 0 {
		t.Fatal("the pod spec must have no volume")
	}
	t0 := time.Now()
	var p *corev1.Pod
	var err error
	testenv.Eventually(t, 30*time.Second, func() error { // until the API server trusts the caBundle
		p, err = c.Client.CoreV1().Pods(ns).Create(ctx, spec.DeepCopy(), metav1.CreateOptions{})
		return err
	})
	checkInjected(t, p)
	p = n.waitPodRunning(ctx, p, 120*time.Second)
	t.Logf("pod %s of Meshlet native, spec without volumes, Running %v after creation", p.Name, time.Since(t0).Round(time.Millisecond))

	layout, err := meshletdir.Parse(n.MeshletDir)
	if err != nil {
		t.Fatal(err)
	}
	dir, _ := layout.PodDir(ns, p.Name, string(p.UID))
	sock, _ := layout.ServerSocket(ns, p.Name, string(p.UID), "native")
	if fi, err := os.Stat(dir); err != nil || !fi.IsDir() {
		t.Fatalf("the pod's folder %s on the node: %v", dir, err)
	}
	testenv.Eventually(t, 10*time.Second, func() error {
		fi, err := os.Stat(sock)
		if err == nil && fi.Mode().Type() != fs.ModeSocket {
			err = fmt.Errorf("%s is %v, not a socket", sock, fi.Mode())
		}
		return err
	})
	pid := n.containerPID(t, ns, p.Name)
	if !sameFile(filepath.Join("/proc", pid, "root", "meshlet"), dir) {
		t.Fatalf("the container's /meshlet (pid %s) is not %s", pid, dir)
	}
	t.Logf("on the node: %s (the container's /meshlet, pid %s), socket server/native in it", dir, pid)

	// The app's socket answers from the node, at the layout path. That
	// path is longer than a unix socket address may be (sun_path, 108
	// bytes: the kubelet's part alone is over 100), so it is reached as
	// meshlessd must reach it: through the pod's folder opened as a
	// directory, /proc/self/fd/N/server/native.
	answer, err := getOverUnix(dir, "server/native")
	if err != nil || !strings.HasPrefix(answer, "instance=native-1 ") {
		t.Fatalf("GET over %s: %q, %v", sock, answer, err)
	}
	t.Logf("GET over the socket (%d-byte path, sun_path holds 107): %s", len(sock), strings.TrimSpace(answer))
	_ = c.Client.CoreV1().Pods(ns).Delete(ctx, p.Name, metav1.DeleteOptions{GracePeriodSeconds: ptr(int64(1))})
}

// containerPID is the host PID of the only container of the pod, from
// `crictl inspect`.
func (n *Node) containerPID(t *testing.T, ns, pod string) string {
	t.Helper()
	sandbox, _, err := n.SandboxNetns(ns, pod)
	if err != nil {
		t.Fatal(err)
	}
	out, err := n.Crictl("ps", "--pod", sandbox, "-q")
	ids := strings.Fields(out)
	if err != nil || len(ids) != 1 {
		t.Fatalf("container of %s: %v %q", pod, err, out)
	}
	if out, err = n.Crictl("inspect", ids[0]); err != nil {
		t.Fatal(err)
	}
	var info struct {
		Info struct {
			Pid int `json:"pid"`
		} `json:"info"`
	}
	if err := json.Unmarshal([]byte(out), &info); err != nil || info.Info.Pid == 0 {
		t.Fatalf("crictl inspect %s: pid %d, %v", ids[0], info.Info.Pid, err)
	}
	return fmt.Sprint(info.Info.Pid)
}

// getOverUnix sends GET / to the HTTP server on the unix socket name
// inside dir, addressed as /proc/self/fd/N/name with N the directory
// opened O_PATH: an address of any length fits in sun_path that way.
func getOverUnix(dir, name string) (string, error) {
	fd, err := unix.Open(dir, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return "", err
	}
	defer unix.Close(fd)
	addr := fmt.Sprintf("/proc/self/fd/%d/%s", fd, name)
	hc := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", addr)
		},
	}}
	defer hc.CloseIdleConnections()
	resp, err := hc.Get("http://meshlet/")
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return string(b), err
}
