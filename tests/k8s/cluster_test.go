// Package k8s tests Meshless against a real Kubernetes control plane:
// etcd, kube-apiserver and kube-controller-manager (v1.35.4, built by
// `make kube-bins` into .cache/k8s/bin) on loopback ports, without kubelets.
// The tests create Nodes and Pods by hand and patch pod status as a kubelet
// would; the real EndpointSlice controller publishes the endpoints.
package k8s

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/meshless/meshless/internal/testenv"
	"github.com/meshless/meshless/tests/harness"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
)

// serviceCIDR is the cluster's service range (inside 198.18.0.0/15).
const serviceCIDR = "198.18.128.0/20"

// advertiseAddr is what the apiserver publishes as the kubernetes
// Service's endpoint; nothing listens there (clients use loopback).
const advertiseAddr = "198.18.0.100"

const adminToken = "meshless-e2e-admin-token"

// binDir returns the directory with kube-apiserver, kube-controller-manager
// and kubectl, or skips (fails under CI=true) when they are missing.
func binDir(t *testing.T) string {
	t.Helper()
	dir := os.Getenv("MESHLESS_K8S_BIN_DIR")
	if dir == "" {
		root, err := repoRoot()
		if err != nil {
			t.Fatal(err)
		}
		dir = filepath.Join(root, ".cache", "k8s", "bin")
	}
	var missing []string
	for _, b := range []string{"kube-apiserver", "kube-controller-manager", "kubectl"} {
		if _, err := os.Stat(filepath.Join(dir, b)); err != nil {
			missing = append(missing, b)
		}
	}
	if _, err := exec.LookPath("etcd"); err != nil {
		missing = append(missing, "etcd (Debian etcd-server)")
	}
	if len(missing) > 0 {
		testenv.Missing(t, fmt.Sprintf("%s in %s: run `make kube-bins` (or set MESHLESS_K8S_BIN_DIR)", strings.Join(missing, ", "), dir))
	}
	return dir
}

func repoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("go.mod not found above the working directory")
		}
		dir = parent
	}
}

// proc is one control-plane process the harness started.
type proc struct {
	name string
	cmd  *exec.Cmd
	log  string
	done chan struct{}
}

// stop ends the process by its pid: SIGTERM (SIGKILL if kill), then
// SIGKILL after 10 s.
func (p *proc) stop(kill bool) {
	if p == nil || p.cmd.Process == nil {
		return
	}
	select {
	case <-p.done:
		return
	default:
	}
	sig := syscall.SIGTERM
	if kill {
		sig = syscall.SIGKILL
	}
	_ = p.cmd.Process.Signal(sig)
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// Cluster is a running control plane.
type Cluster struct {
	t   *testing.T
	bin string
	dir string

	etcdPort, etcdPeerPort, apiPort, kcmPort int

	etcd, apiserver, kcm, scheduler *proc
	egress                          *egressProxy

	// Kubeconfig is an admin kubeconfig file (static token).
	Kubeconfig string
	// Config is the admin client configuration.
	Config *rest.Config
	// Client is an admin clientset.
	Client kubernetes.Interface
}

// StartCluster starts etcd, kube-apiserver and kube-controller-manager and
// waits until the apiserver is ready and the default ServiceAccount exists.
// Everything is stopped, by pid, when the test ends.
func StartCluster(t *testing.T) *Cluster {
	t.Helper()
	return StartClusterWith(t, ClusterOptions{})
}

// ClusterOptions change what StartClusterWith runs.
type ClusterOptions struct {
	// NodeLifecycle runs the node lifecycle controller, for clusters of
	// real kubelets: it lifts the not-ready taint a kubelet registers its
	// Node with. Off, Nodes created by hand are not marked unready.
	NodeLifecycle bool
}

// StartClusterWith is StartCluster with options.
func StartClusterWith(t *testing.T, o ClusterOptions) *Cluster {
	t.Helper()
	c := &Cluster{t: t, bin: binDir(t), dir: t.TempDir()}
	c.etcdPort, c.etcdPeerPort, c.apiPort, c.kcmPort = freePort(t), freePort(t), freePort(t), freePort(t)
	t.Cleanup(c.Stop)
	start := time.Now()

	// Service-account key pair and the static token file.
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	pub, err := x509.MarshalPKIXPublicKey(&key.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, c.path("sa.key"), pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)}))
	writeFile(t, c.path("sa.pub"), pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pub}))
	writeFile(t, c.path("tokens.csv"), []byte(adminToken+",admin,admin-uid,system:masters\n"))
	c.egress = startEgressProxy(t, c.path("egress.sock"))
	writeFile(t, c.path("egress.yaml"), []byte(c.egress.config()))

	c.etcd = c.start("etcd", "etcd",
		"--name=default",
		"--data-dir="+c.path("etcd"),
		"--listen-client-urls="+c.etcdURL(),
		"--advertise-client-urls="+c.etcdURL(),
		"--listen-peer-urls="+fmt.Sprintf("http://127.0.0.1:%d", c.etcdPeerPort),
		"--initial-advertise-peer-urls="+fmt.Sprintf("http://127.0.0.1:%d", c.etcdPeerPort),
		"--initial-cluster="+fmt.Sprintf("default=http://127.0.0.1:%d", c.etcdPeerPort),
		"--listen-metrics-urls=",
		"--quota-backend-bytes=1073741824",
		"--log-level=warn", "--logger=zap",
	)
	c.waitHTTP("etcd", c.etcdURL()+"/health", "", 30*time.Second)

	c.StartAPIServer()

	// Admin access: a kubeconfig and a clientset.
	c.Config = &rest.Config{
		Host:            c.APIURL(),
		BearerToken:     adminToken,
		TLSClientConfig: rest.TLSClientConfig{CAFile: c.path("certs", "apiserver.crt"), ServerName: "kubernetes"},
		QPS:             50, Burst: 100,
	}
	c.Kubeconfig = c.path("admin.kubeconfig")
	writeFile(t, c.Kubeconfig, []byte(c.KubeconfigFor(adminToken)))
	if c.Client, err = kubernetes.NewForConfig(c.Config); err != nil {
		t.Fatal(err)
	}

	controllers := "*,-nodeipam,-nodelifecycle"
	if o.NodeLifecycle {
		controllers = "*,-nodeipam"
	}
	c.kcm = c.start("kube-controller-manager", filepath.Join(c.bin, "kube-controller-manager"),
		"--kubeconfig="+c.Kubeconfig,
		"--controllers="+controllers,
		"--leader-elect=false",
		"--service-account-private-key-file="+c.path("sa.key"),
		"--root-ca-file="+c.path("certs", "apiserver.crt"),
		"--service-cluster-ip-range="+serviceCIDR,
		"--bind-address=127.0.0.1",
		"--secure-port="+strconv.Itoa(c.kcmPort),
		"--v=1",
	)
	c.waitDefaultServiceAccount(90 * time.Second)
	t.Logf("control plane up in %v: apiserver %s, etcd %s, logs in %s", time.Since(start).Round(time.Millisecond), c.APIURL(), c.etcdURL(), c.dir)
	return c
}

// StartAPIServer starts kube-apiserver (again, after StopAPIServer, on the
// same port and etcd) and waits until /readyz answers 200.
func (c *Cluster) StartAPIServer() {
	c.t.Helper()
	t0 := time.Now()
	c.apiserver = c.start("kube-apiserver", filepath.Join(c.bin, "kube-apiserver"),
		"--etcd-servers="+c.etcdURL(),
		"--bind-address=127.0.0.1",
		"--advertise-address="+advertiseAddr,
		"--secure-port="+strconv.Itoa(c.apiPort),
		"--cert-dir="+c.path("certs"),
		"--service-cluster-ip-range="+serviceCIDR,
		"--token-auth-file="+c.path("tokens.csv"),
		"--authorization-mode=RBAC",
		"--service-account-issuer=https://kubernetes.default.svc.cluster.local",
		"--service-account-key-file="+c.path("sa.pub"),
		"--service-account-signing-key-file="+c.path("sa.key"),
		"--allow-privileged=true",
		// The cluster's Services, webhooks among them, through the test's
		// proxy (egress_test.go): nothing else routes a ClusterIP here.
		"--egress-selector-config-file="+c.path("egress.yaml"),
		"--profiling=false",
		"--v=1",
	)
	c.waitHTTP("kube-apiserver", c.APIURL()+"/readyz", adminToken, 120*time.Second)
	c.t.Logf("kube-apiserver ready in %v", time.Since(t0).Round(time.Millisecond))
}

// StopAPIServer kills kube-apiserver (SIGKILL, as a crash would).
func (c *Cluster) StopAPIServer() {
	c.apiserver.stop(true)
}

// Stop stops everything the cluster started, by pid, newest first.
func (c *Cluster) Stop() {
	for _, p := range []*proc{c.scheduler, c.kcm, c.apiserver, c.etcd} {
		p.stop(false)
	}
	if c.egress != nil {
		c.egress.close()
	}
	if c.t.Failed() {
		for _, p := range []*proc{c.etcd, c.apiserver, c.kcm, c.scheduler} {
			if p != nil {
				c.t.Logf("---- last lines of %s (%s) ----\n%s", p.name, p.log, tail(p.log, 30))
			}
		}
	}
}

// APIURL is the apiserver's URL.
func (c *Cluster) APIURL() string { return fmt.Sprintf("https://127.0.0.1:%d", c.apiPort) }

// KubeconfigFor returns a kubeconfig that authenticates with token.
func (c *Cluster) KubeconfigFor(token string) string {
	return c.kubeconfigAt(c.APIURL(), token)
}

// kubeconfigAt is KubeconfigFor with another URL for the apiserver (a
// proxy to it, e.g. from inside a node's netns).
func (c *Cluster) kubeconfigAt(server, token string) string {
	return fmt.Sprintf(`apiVersion: v1
kind: Config
clusters:
- name: e2e
  cluster:
    server: %s
    certificate-authority: %s
    tls-server-name: kubernetes
users:
- name: u
  user:
    token: %s
contexts:
- name: e2e
  context: {cluster: e2e, user: u}
current-context: e2e
`, server, c.path("certs", "apiserver.crt"), token)
}

// Kubectl runs the cluster's kubectl with the admin kubeconfig.
func (c *Cluster) Kubectl(args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(c.bin, "kubectl"), append([]string{"--kubeconfig=" + c.Kubeconfig}, args...)...)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func (c *Cluster) path(elem ...string) string {
	return filepath.Join(append([]string{c.dir}, elem...)...)
}

func (c *Cluster) etcdURL() string { return fmt.Sprintf("http://127.0.0.1:%d", c.etcdPort) }

func (c *Cluster) start(name, bin string, args ...string) *proc {
	c.t.Helper()
	return startLogged(c.t, name, c.path(name+".log"), exec.Command(bin, args...))
}

// startLogged starts cmd with its output appended to logPath. The process
// dies with the test binary even if that is killed before its cleanups.
func startLogged(t *testing.T, name, logPath string, cmd *exec.Cmd) *proc {
	t.Helper()
	f, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		f.Close()
		t.Fatalf("start %s: %v", name, err)
	}
	p := &proc{name: name, cmd: cmd, log: logPath, done: make(chan struct{})}
	go func() {
		_ = cmd.Wait()
		f.Close()
		close(p.done)
	}()
	return p
}

// waitHTTP polls url until it answers 200.
func (c *Cluster) waitHTTP(name, url, token string, timeout time.Duration) {
	c.t.Helper()
	hc := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{InsecureSkipVerify: true}, // only a readiness poll
	}}
	defer hc.CloseIdleConnections()
	deadline := time.Now().Add(timeout)
	var last string
	for time.Now().Before(deadline) {
		for _, p := range []*proc{c.etcd, c.apiserver, c.kcm} {
			if p != nil && p.exited() {
				c.t.Fatalf("%s exited while waiting for %s:\n%s", p.name, name, tail(p.log, 40))
			}
		}
		req, _ := http.NewRequest(http.MethodGet, url, nil)
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := hc.Do(req)
		if err == nil {
			body := new(bytes.Buffer)
			_, _ = body.ReadFrom(resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
			last = fmt.Sprintf("%d %s", resp.StatusCode, firstLines(body.String(), 5))
		} else {
			last = err.Error()
		}
		time.Sleep(200 * time.Millisecond) // polling interval
	}
	c.t.Fatalf("%s not ready after %v: %s", name, timeout, last)
}

func (c *Cluster) waitDefaultServiceAccount(timeout time.Duration) {
	c.t.Helper()
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if c.kcm.exited() {
			c.t.Fatalf("kube-controller-manager exited:\n%s", tail(c.kcm.log, 40))
		}
		_, err := c.Client.CoreV1().ServiceAccounts("default").Get(context.Background(), "default", metav1.GetOptions{})
		if err == nil {
			return
		}
		if !apierrors.IsNotFound(err) {
			c.t.Logf("waiting for the default ServiceAccount: %v", err)
		}
		time.Sleep(200 * time.Millisecond) // polling interval
	}
	c.t.Fatalf("no default ServiceAccount after %v (kube-controller-manager log %s)", timeout, c.kcm.log)
}

// CreateNode creates a Ready node with an InternalIP and pod CIDRs, as a
// kubelet and the node IPAM controller would leave it.
func (c *Cluster) CreateNode(ctx context.Context, name, ip string, podCIDRs ...string) {
	c.t.Helper()
	n := &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{"kubernetes.io/hostname": name}},
		Spec:       corev1.NodeSpec{PodCIDR: podCIDRs[0], PodCIDRs: podCIDRs},
	}
	if _, err := c.Client.CoreV1().Nodes().Create(ctx, n, metav1.CreateOptions{}); err != nil {
		c.t.Fatalf("create node %s: %v", name, err)
	}
	c.PatchStatus(ctx, "nodes", "", name, corev1.NodeStatus{
		Addresses:  []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: ip}, {Type: corev1.NodeHostName, Address: name}},
		Conditions: []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionTrue, Reason: "KubeletReady", LastHeartbeatTime: metav1.Now(), LastTransitionTime: metav1.Now()}},
		Phase:      corev1.NodeRunning,
	})
}

// PatchStatus replaces the given fields of the status of a node or pod
// (a JSON merge patch of the status subresource: lists are replaced whole),
// as the kubelet does; it needs no resourceVersion, so controllers touching
// the object meanwhile do not make it conflict.
func (c *Cluster) PatchStatus(ctx context.Context, resource, ns, name string, status any) {
	c.t.Helper()
	patch, err := json.Marshal(map[string]any{"status": status})
	if err != nil {
		c.t.Fatal(err)
	}
	switch resource {
	case "nodes":
		_, err = c.Client.CoreV1().Nodes().Patch(ctx, name, types.MergePatchType, patch, metav1.PatchOptions{}, "status")
	case "pods":
		_, err = c.Client.CoreV1().Pods(ns).Patch(ctx, name, types.MergePatchType, patch, metav1.PatchOptions{}, "status")
	default:
		c.t.Fatalf("PatchStatus: resource %q", resource)
	}
	if err != nil {
		c.t.Fatalf("patch %s %s status: %v", resource, name, err)
	}
}

// SetPodStatus sets what a kubelet reports for a running pod: phase
// Running, the pod IP and the Ready condition.
func (c *Cluster) SetPodStatus(ctx context.Context, ns, name, ip string, ready bool) {
	c.t.Helper()
	st := corev1.ConditionFalse
	if ready {
		st = corev1.ConditionTrue
	}
	now := metav1.Now()
	c.PatchStatus(ctx, "pods", ns, name, corev1.PodStatus{
		Phase:     corev1.PodRunning,
		PodIP:     ip,
		PodIPs:    []corev1.PodIP{{IP: ip}},
		StartTime: &now,
		Conditions: []corev1.PodCondition{
			{Type: corev1.PodScheduled, Status: corev1.ConditionTrue, LastTransitionTime: now},
			{Type: corev1.PodInitialized, Status: corev1.ConditionTrue, LastTransitionTime: now},
			{Type: corev1.ContainersReady, Status: st, LastTransitionTime: now},
			{Type: corev1.PodReady, Status: st, LastTransitionTime: now},
		},
	})
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func writeFile(t *testing.T, path string, data []byte) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
}

// tail returns the last n lines of the file at path.
func tail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	return harness.Tail(string(b), n)
}

func firstLines(s string, n int) string {
	lines := strings.SplitN(s, "\n", n+1)
	if len(lines) > n {
		lines = lines[:n]
	}
	return strings.Join(lines, " | ")
}
