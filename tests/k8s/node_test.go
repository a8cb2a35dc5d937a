package k8s

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/meshless/meshless/daemon/cniapi"
	"github.com/meshless/meshless/internal/nstest"
	"github.com/meshless/meshless/internal/testenv"
	"github.com/meshless/meshless/tests/harness"
)

const localOutbound = `meshless_connections_total{direction="outbound",path="local"}`

// testNode runs a real kubelet and containerd (see node_harness_test.go)
// with meshless-cni installed by `meshlessctl install-cni` after the bridge
// plugin, and meshlessd on the node: pods the kubelet starts are meshed,
// registered with their Kubernetes identity, reach each other through a
// Service VIP via the daemon, and are deregistered when deleted. Pods
// created while the daemon is down come up meshed once it starts.
func testNode(ctx context.Context, t *testing.T, c *Cluster) {
	nstest.RequireRoot(t)
	bins := harness.Binaries(t)
	n := StartNode(t, c, bins)
	const ns = "node-e2e"

	if _, err := c.Client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	// Pods need the namespace's default ServiceAccount (admission); do not
	// wait for the controller to make it.
	if _, err := c.Client.CoreV1().ServiceAccounts(ns).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "default"}}, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}

	t0 := time.Now()
	d := n.StartDaemon()
	client := cniapi.NewClient(d.Socket)
	t.Logf("meshlessd ready in %v", time.Since(t0).Round(time.Millisecond))

	svc := createHTTPService(ctx, t, c, ns, "web")
	vip := svc.Spec.ClusterIP

	// A server pod: started by the kubelet, meshed by the chain.
	t0 = time.Now()
	server := n.createPod(ctx, ns, serverPod("web-1"))
	server = n.waitPodRunning(ctx, server, 120*time.Second)
	t.Logf("pod %s/%s Running (IP %s) %v after creation", ns, server.Name, server.Status.PodIP, time.Since(t0).Round(time.Millisecond))
	n.checkMeshed(ctx, client, server)

	// The daemon routes the Service VIP to the pod on this node.
	t0 = time.Now()
	want := server.Status.PodIP + "@" + n.Name
	waitUntil(t, "meshlessd routing "+ns+"/web to "+want, 30*time.Second, func() (bool, string) {
		st, err := client.Status(ctx)
		if err != nil {
			return false, err.Error()
		}
		for _, s := range st.Services {
			if s.Name == ns+"/web" {
				return slices.Contains(s.Endpoints, want), fmt.Sprintf("%+v", s)
			}
		}
		return false, "no service " + ns + "/web"
	})
	t.Logf("meshlessd routes %s (%s) -> %s %v later", ns+"/web", vip, want, time.Since(t0).Round(time.Millisecond))

	// A client pod calls the VIP: no kube-proxy runs here, so only the
	// daemon can carry it, on its same-node (local) path.
	const requests = 5
	before := d.Metric(localOutbound)
	t0 = time.Now()
	cl := n.createPod(ctx, ns, &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "client-1"},
		Spec: podSpec(corev1.RestartPolicyNever, "client",
			"/demo-client", "--n", fmt.Sprint(requests), "--new-conn", "--timeout", "10s", fmt.Sprintf("http://%s/", vip)),
	})
	cl = n.waitPodDone(ctx, cl, 120*time.Second)
	log, err := n.PodLog(cl, "client")
	if cl.Status.Phase != corev1.PodSucceeded {
		t.Fatalf("client pod %s (%s); log (%v):\n%s", cl.Status.Phase, containerState(cl), err, log)
	}
	if !strings.Contains(log, "instance=web-1 ") {
		t.Errorf("client log does not show web-1 answering:\n%s", log)
	}
	after := d.Metric(localOutbound)
	t.Logf("client pod Succeeded %v after creation; %s %v -> %v; its log:\n%s", time.Since(t0).Round(time.Millisecond), localOutbound, before, after, strings.TrimSpace(log))
	if after-before < requests {
		t.Errorf("%s rose by %v, want >= %d (one per request, --new-conn)", localOutbound, after-before, requests)
	}

	t.Run("meshlet policy", func(t *testing.T) { testMeshletPolicy(ctx, t, c, n, d, ns, vip, server.Name) })
	t.Run("meshlet dir", func(t *testing.T) { testMeshletDir(ctx, t, c, n, ns) })

	// Deleting the server pod deregisters it (the kubelet's StopPodSandbox
	// runs CNI DEL).
	t0 = time.Now()
	if err := c.Client.CoreV1().Pods(ns).Delete(ctx, server.Name, metav1.DeleteOptions{GracePeriodSeconds: ptr(int64(1))}); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "deregistration of "+server.Name, 60*time.Second, func() (bool, string) {
		reg, err := findRegistration(ctx, client, server.UID)
		return err == nil && reg == nil, fmt.Sprint(reg, err)
	})
	t.Logf("%s deregistered %v after deletion", server.Name, time.Since(t0).Round(time.Millisecond))

	d.Stop()
	testDaemonDown(ctx, t, c, n)
	testEnrollRunning(ctx, t, c, n)
}

// testDaemonDown: with the daemon down, ADD fails with code 11 (try again
// later) and the kubelet retries; once the daemon is back the pod comes up
// meshed. The daemon is down on entry and on return.
func testDaemonDown(ctx context.Context, t *testing.T, c *Cluster, n *Node) {
	const ns = "node-e2e"
	// ADDs of web-2 that meshless-cni failed with code 11, from its log
	// (one line per failed invocation: op=ADD ... pod=node-e2e/web-2 ...
	// code=11).
	failures := func() int {
		b, _ := os.ReadFile(n.PluginLog)
		count := 0
		for _, line := range strings.Split(string(b), "\n") {
			if strings.Contains(line, "op=ADD") && strings.Contains(line, "pod="+ns+"/web-2") && strings.HasSuffix(line, "code=11") {
				count++
			}
		}
		return count
	}
	before := failures()
	t0 := time.Now()
	late := n.createPod(ctx, ns, serverPod("web-2"))
	waitUntil(t, "FailedCreatePodSandBox for web-2", 60*time.Second, func() (bool, string) {
		evs, err := c.Client.CoreV1().Events(ns).List(ctx, metav1.ListOptions{FieldSelector: "involvedObject.name=web-2,reason=FailedCreatePodSandBox"})
		if err != nil || len(evs.Items) == 0 {
			return false, fmt.Sprint(err)
		}
		msg := evs.Items[0].Message
		if !strings.Contains(msg, "meshless daemon unreachable") {
			t.Fatalf("FailedCreatePodSandBox event does not name the daemon: %s", msg)
		}
		t.Logf("kubelet event: %s", msg)
		return true, ""
	})
	if failures() == before {
		t.Errorf("meshless-cni log shows no ADD failing with code 11:\n%s", tail(n.PluginLog, 10))
	}
	t.Logf("ADD failed with code 11 while the daemon was down (%v after creation)", time.Since(t0).Round(time.Millisecond))
	// The pod must come up through a retry that follows a failed one, not
	// a first attempt: wait for the kubelet's second ADD to fail too.
	waitUntil(t, "a second ADD of web-2 failing with code 11", 60*time.Second, func() (bool, string) {
		return failures() >= before+2, fmt.Sprintf("%d ADD failures with code 11 so far:\n%s", failures()-before, tail(n.PluginLog, 10))
	})
	t.Logf("second ADD failed %v after creation", time.Since(t0).Round(time.Millisecond))
	d := n.StartDaemon()
	t1 := time.Now()
	late = n.waitPodRunning(ctx, late, 120*time.Second)
	t.Logf("web-2 Running %v after the daemon started (%v after creation)", time.Since(t1).Round(time.Millisecond), time.Since(t0).Round(time.Millisecond))
	n.checkMeshed(ctx, cniapi.NewClient(d.Socket), late)
	d.Stop()
}

// testEnrollRunning: pods that started while meshless-cni was not in the
// CNI chain (Meshless installed on a node with pods) are found and enrolled
// by meshlessd once it runs: registered with their identity under the
// synthetic attachment enrolled-<UID>, their netns (found by address) has
// the rules, and a client pod's call to a Service VIP goes through the
// daemon. The daemon is down on entry.
func testEnrollRunning(ctx context.Context, t *testing.T, c *Cluster, n *Node) {
	const ns = "node-e2e"
	list, meshed := n.unmeshChain(t)

	svc := createHTTPService(ctx, t, c, ns, "old-web")
	vip := svc.Spec.ClusterIP
	srv := serverPod("old-web-1")
	srv.Labels = map[string]string{"app": "old-web"}
	// The client is long-running: it calls the VIP later, by crictl exec.
	cli := serverPod("old-client")
	cli.Labels = map[string]string{"app": "old-client"}
	t0 := time.Now()
	srv = n.createPod(ctx, ns, srv)
	cli = n.createPod(ctx, ns, cli)
	// Running with the daemon down: the chain did not call meshless-cni.
	srv = n.waitPodRunning(ctx, srv, 120*time.Second)
	cli = n.waitPodRunning(ctx, cli, 120*time.Second)
	t.Logf("pods %s (%s) and %s (%s) Running without the mesh %v after creation", srv.Name, srv.Status.PodIP, cli.Name, cli.Status.PodIP, time.Since(t0).Round(time.Millisecond))
	for _, p := range []*corev1.Pod{srv, cli} {
		_, netns, err := n.SandboxNetns(ns, p.Name)
		if err != nil {
			t.Fatal(err)
		}
		if rules, _ := netnsRules(t, n.netnsPath(netns)); rules != "" {
			t.Fatalf("%s has meshless rules before the daemon ran:\n%s", p.Name, rules)
		}
	}

	// Meshless installed: the chain has meshless-cni again and the daemon
	// starts, with --enroll-existing (the default).
	writeFile(t, list, meshed)
	t0 = time.Now()
	d := n.StartDaemon()
	client := cniapi.NewClient(d.Socket)
	for _, p := range []*corev1.Pod{srv, cli} {
		n.checkEnrolled(ctx, t, client, p, t0)
	}

	want := srv.Status.PodIP + "@" + n.Name
	waitUntil(t, "meshlessd routing "+ns+"/old-web to "+want, 30*time.Second, func() (bool, string) {
		st, err := client.Status(ctx)
		if err != nil {
			return false, err.Error()
		}
		for _, s := range st.Services {
			if s.Name == ns+"/old-web" {
				return slices.Contains(s.Endpoints, want), fmt.Sprintf("%+v", s)
			}
		}
		return false, "no service " + ns + "/old-web"
	})

	// The client pod calls the VIP from its own container: no kube-proxy
	// here, so only the daemon can carry it.
	n.callFromPod(ctx, t, d, cli, vip, "old-web-1")

	// Deleting an enrolled pod deregisters it (no CNI DEL reaches the
	// daemon for it: the daemon sees the pod go in the API).
	t0 = time.Now()
	if err := c.Client.CoreV1().Pods(ns).Delete(ctx, srv.Name, metav1.DeleteOptions{GracePeriodSeconds: ptr(int64(1))}); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "deregistration of enrolled "+srv.Name, 60*time.Second, func() (bool, string) {
		reg, err := findRegistration(ctx, client, srv.UID)
		return err == nil && reg == nil, fmt.Sprint(reg, err)
	})
	t.Logf("enrolled %s deregistered %v after deletion", srv.Name, time.Since(t0).Round(time.Millisecond))
}

// callFromPod runs demo-client in pod cli's container against vip, over
// new connections, and checks that server answered and that daemon d
// counted each connection on its same-node path.
func (n *Node) callFromPod(ctx context.Context, t *testing.T, d *harness.Daemon, cli *corev1.Pod, vip, server string) {
	t.Helper()
	sandbox, _, err := n.SandboxNetns(cli.Namespace, cli.Name)
	if err != nil {
		t.Fatal(err)
	}
	out, err := n.Crictl("ps", "--pod", sandbox, "-q")
	ids := strings.Fields(out)
	if err != nil || len(ids) != 1 {
		t.Fatalf("container of %s: %v %q", cli.Name, err, out)
	}
	const requests = 3
	before := d.Metric(localOutbound)
	// crictl exec talks to containerd's streaming server, which listens on
	// loopback in the node netns: run it there.
	ep := "unix://" + n.CRISock
	b, err := exec.CommandContext(ctx, "nsenter", "--net="+n.Netns, "--", n.crictlBin, "--runtime-endpoint", ep, "--timeout", "30s",
		"exec", ids[0], "/demo-client", "--n", fmt.Sprint(requests), "--new-conn", "--timeout", "10s", fmt.Sprintf("http://%s/", vip)).CombinedOutput()
	out = string(b)
	if err != nil {
		t.Fatalf("demo-client in %s: %v\n%s", cli.Name, err, out)
	}
	if !strings.Contains(out, "instance="+server+" ") {
		t.Errorf("client output does not show %s answering:\n%s", server, out)
	}
	after := d.Metric(localOutbound)
	t.Logf("enrolled client -> %s (server %s): %s %v -> %v; output:\n%s", vip, server, localOutbound, before, after, strings.TrimSpace(out))
	if after-before < requests {
		t.Errorf("%s rose by %v, want >= %d", localOutbound, after-before, requests)
	}
}

// unmeshChain rewrites the node's conflist without meshless-cni, as before
// `meshlessctl install-cni`, and waits until containerd has loaded it. It
// returns the conflist's path and its meshed content, to put back.
func (n *Node) unmeshChain(t *testing.T) (string, []byte) {
	t.Helper()
	list := filepath.Join(n.CNIConfDir, "10-meshless-e2e.conflist")
	meshed, err := os.ReadFile(list)
	if err != nil {
		t.Fatal(err)
	}
	var conf map[string]any
	if err := json.Unmarshal(meshed, &conf); err != nil {
		t.Fatal(err)
	}
	conf["plugins"] = conf["plugins"].([]any)[:1]
	bare, _ := json.MarshalIndent(conf, "", "  ")
	writeFile(t, list, bare)
	t.Logf("conflist without meshless-cni:\n%s", bare)
	// containerd reloads the conf dir when it changes; the pods below must
	// start with the bare chain, so wait until it is the one loaded.
	waitUntil(t, "containerd loading the chain without meshless-cni", 30*time.Second, func() (bool, string) {
		chain, err := n.loadedChain()
		return err == nil && len(chain) > 0 && !slices.Contains(chain, "meshless-cni"), fmt.Sprint(chain, err)
	})
	return list, meshed
}

// checkEnrolled waits until the daemon has enrolled running pod p (not
// through CNI), then checks the registration and the rules in its netns.
func (n *Node) checkEnrolled(ctx context.Context, t *testing.T, client *cniapi.Client, p *corev1.Pod, t0 time.Time) {
	t.Helper()
	var reg *cniapi.PodStatus
	waitUntil(t, "enrollment of "+p.Name, 60*time.Second, func() (bool, string) {
		var err error
		reg, err = findRegistration(ctx, client, p.UID)
		return reg != nil, fmt.Sprint(err)
	})
	t.Logf("%s enrolled %v after the daemon started: %s netns %s listeners %v", p.Name, time.Since(t0).Round(time.Millisecond), reg.Key(), reg.Netns, reg.Listeners)
	if reg.ContainerID != cniapi.EnrolledPrefix+string(p.UID) || reg.Namespace != p.Namespace || reg.Name != p.Name {
		t.Errorf("registration %s %s/%s, want enrolled-%s %s/%s", reg.ContainerID, reg.Namespace, reg.Name, p.UID, p.Namespace, p.Name)
	}
	if !slices.Contains(reg.IPs, netip.MustParseAddr(p.Status.PodIP)) {
		t.Errorf("registration IPs %v, pod IP %s", reg.IPs, p.Status.PodIP)
	}
	_, netns, err := n.SandboxNetns(p.Namespace, p.Name)
	if err != nil {
		t.Fatal(err)
	}
	if !sameFile(n.netnsPath(reg.Netns), n.netnsPath(netns)) {
		t.Errorf("enrolled netns %s is not the sandbox's %s", reg.Netns, netns)
	}
	waitUntil(t, "rules in "+p.Name, 10*time.Second, func() (bool, string) {
		rules, _ := netnsRules(t, n.netnsPath(netns))
		return rules != "", "no meshless rules in " + netns
	})
}

// sameFile reports whether two paths name the same file (netns inode).
func sameFile(a, b string) bool {
	sa, err1 := os.Stat(a)
	sb, err2 := os.Stat(b)
	return err1 == nil && err2 == nil && os.SameFile(sa, sb)
}

func serverPod(name string) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{"app": "web"}},
		Spec:       podSpec(corev1.RestartPolicyAlways, "server", "/demo-server", "--listen", ":8080", "--name", name),
	}
}

func podSpec(restart corev1.RestartPolicy, container string, cmd ...string) corev1.PodSpec {
	return corev1.PodSpec{
		NodeName:                      nodeName,
		RestartPolicy:                 restart,
		AutomountServiceAccountToken:  ptr(false),
		EnableServiceLinks:            ptr(false),
		TerminationGracePeriodSeconds: ptr(int64(1)),
		Containers: []corev1.Container{{
			Name: container, Image: e2eImage, ImagePullPolicy: corev1.PullNever, Command: cmd,
		}},
	}
}

func (n *Node) createPod(ctx context.Context, ns string, p *corev1.Pod) *corev1.Pod {
	n.t.Helper()
	p, err := n.c.Client.CoreV1().Pods(ns).Create(ctx, p, metav1.CreateOptions{})
	if err != nil {
		n.t.Fatal(err)
	}
	return p
}

func (n *Node) waitPodRunning(ctx context.Context, p *corev1.Pod, timeout time.Duration) *corev1.Pod {
	n.t.Helper()
	return n.waitPod(ctx, p, "Running and Ready", timeout, func(p *corev1.Pod) bool {
		if p.Status.Phase != corev1.PodRunning || p.Status.PodIP == "" {
			return false
		}
		for _, c := range p.Status.Conditions {
			if c.Type == corev1.PodReady {
				return c.Status == corev1.ConditionTrue
			}
		}
		return false
	})
}

func (n *Node) waitPodDone(ctx context.Context, p *corev1.Pod, timeout time.Duration) *corev1.Pod {
	n.t.Helper()
	return n.waitPod(ctx, p, "Succeeded or Failed", timeout, func(p *corev1.Pod) bool {
		return p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed
	})
}

func (n *Node) waitPod(ctx context.Context, p *corev1.Pod, what string, timeout time.Duration, ok func(*corev1.Pod) bool) *corev1.Pod {
	n.t.Helper()
	var cur *corev1.Pod
	deadline := time.Now().Add(timeout)
	for {
		if n.kubelet.exited() {
			n.t.Fatalf("kubelet exited:\n%s", tail(n.kubelet.log, 40))
		}
		var err error
		cur, err = n.c.Client.CoreV1().Pods(p.Namespace).Get(ctx, p.Name, metav1.GetOptions{})
		if err == nil && ok(cur) {
			return cur
		}
		if time.Now().After(deadline) {
			evs, _ := n.c.Client.CoreV1().Events(p.Namespace).List(ctx, metav1.ListOptions{FieldSelector: "involvedObject.name=" + p.Name})
			var lines []string
			if evs != nil {
				for _, e := range evs.Items {
					lines = append(lines, fmt.Sprintf("%s %s (x%d): %s", e.Type, e.Reason, e.Count, e.Message))
				}
			}
			phase := ""
			if cur != nil {
				phase = string(cur.Status.Phase) + " " + containerState(cur)
			}
			n.t.Fatalf("pod %s/%s not %s after %v (%s %v); events:\n%s", p.Namespace, p.Name, what, timeout, phase, err, strings.Join(lines, "\n"))
		}
		time.Sleep(250 * time.Millisecond) // polling interval
	}
}

func containerState(p *corev1.Pod) string {
	var s []string
	for _, c := range p.Status.ContainerStatuses {
		switch {
		case c.State.Terminated != nil:
			s = append(s, fmt.Sprintf("%s terminated exit %d %s", c.Name, c.State.Terminated.ExitCode, c.State.Terminated.Reason))
		case c.State.Waiting != nil:
			s = append(s, fmt.Sprintf("%s waiting %s %s", c.Name, c.State.Waiting.Reason, c.State.Waiting.Message))
		case c.State.Running != nil:
			s = append(s, c.Name+" running")
		}
	}
	return strings.Join(s, "; ")
}

// checkMeshed checks that the daemon registered the running pod with its
// Kubernetes identity and the sandbox's netns, and that the netns has the
// redirection rules.
func (n *Node) checkMeshed(ctx context.Context, client *cniapi.Client, p *corev1.Pod) {
	t := n.t
	t.Helper()
	var reg *cniapi.PodStatus
	waitUntil(t, "registration of "+p.Name, 30*time.Second, func() (bool, string) {
		var err error
		reg, err = findRegistration(ctx, client, p.UID)
		return reg != nil, fmt.Sprint(err)
	})
	if reg.Namespace != p.Namespace || reg.Name != p.Name || reg.UID != string(p.UID) {
		t.Errorf("registration identity %s/%s uid %s, want %s/%s uid %s", reg.Namespace, reg.Name, reg.UID, p.Namespace, p.Name, p.UID)
	}
	if !slices.Contains(reg.IPs, netip.MustParseAddr(p.Status.PodIP)) {
		t.Errorf("registration IPs %v, pod IP %s", reg.IPs, p.Status.PodIP)
	}
	got, err := client.Get(ctx, reg.Attachment)
	if err != nil || got.UID != string(p.UID) {
		t.Errorf("Get(%s) = %+v, %v", reg.Attachment.Key(), got, err)
	}
	id, netns, err := n.SandboxNetns(p.Namespace, p.Name)
	if err != nil {
		t.Fatal(err)
	}
	if reg.ContainerID != id || reg.Netns != netns {
		t.Errorf("registration %s netns %s, want sandbox %s netns %s", reg.ContainerID, reg.Netns, id, netns)
	}
	rules, backend := netnsRules(t, n.netnsPath(netns))
	if rules == "" {
		t.Fatalf("no meshless rules in %s (sandbox %s of %s)", netns, id, p.Name)
	}
	t.Logf("%s/%s meshed: sandbox %.12s, netns %s, %s rules (redirect %q), listeners %v", p.Namespace, p.Name, id, netns, backend, reg.Redirect, reg.Listeners)
}

// netnsRules returns the meshless rules in a netns: the nft table inet
// meshless or the MESHLESS_* iptables chains.
func netnsRules(t *testing.T, netns string) (string, string) {
	t.Helper()
	if out, err := exec.Command("nsenter", "--net="+netns, "--", "nft", "list", "table", "inet", "meshless").CombinedOutput(); err == nil && strings.Contains(string(out), "redirect") {
		return string(out), "nftables"
	}
	out, err := exec.Command("nsenter", "--net="+netns, "--", "iptables-save").CombinedOutput()
	if err == nil && strings.Contains(string(out), "MESHLESS_OUTPUT") {
		return string(out), "iptables"
	}
	return "", ""
}

// findRegistration returns the daemon's registration of the pod with uid,
// or nil.
func findRegistration(ctx context.Context, c *cniapi.Client, uid any) (*cniapi.PodStatus, error) {
	pods, err := c.List(ctx)
	if err != nil {
		return nil, err
	}
	for i := range pods {
		if pods[i].UID == fmt.Sprint(uid) {
			return &pods[i], nil
		}
	}
	return nil, nil
}

// loadedChain returns the plugin types, in chain order, of the pod network
// that containerd's CRI plugin has loaded from the conf dir (crictl info).
func (n *Node) loadedChain() ([]string, error) {
	out, err := n.Crictl("info")
	if err != nil {
		return nil, err
	}
	// go-cni's ConfigResult, as containerd 1.6 reports it under cniconfig.
	var info struct {
		CNIConfig struct {
			Networks []struct {
				IFName string
				Config struct {
					Plugins []struct {
						Network struct {
							Type string `json:"type"`
						}
					}
				}
			}
		} `json:"cniconfig"`
	}
	if err := json.Unmarshal([]byte(out), &info); err != nil {
		return nil, fmt.Errorf("crictl info: %w", err)
	}
	for _, nw := range info.CNIConfig.Networks {
		if nw.IFName == "lo" { // containerd's own loopback network
			continue
		}
		var types []string
		for _, p := range nw.Config.Plugins {
			types = append(types, p.Network.Type)
		}
		return types, nil
	}
	return nil, fmt.Errorf("crictl info: no pod network loaded")
}

// waitUntil polls ok every 100 ms until it holds, failing t after timeout
// with ok's last explanation.
func waitUntil(t *testing.T, what string, timeout time.Duration, ok func() (bool, string)) {
	t.Helper()
	testenv.Eventually(t, timeout, func() error {
		if done, why := ok(); !done {
			return fmt.Errorf("%s: %s", what, why)
		}
		return nil
	})
}

// createHTTPService creates Service ns/name: port 80 (http) to target port
// 8080 of the pods labelled app=name, as the node tests' servers serve.
func createHTTPService(ctx context.Context, t *testing.T, c *Cluster, ns, name string) *corev1.Service {
	t.Helper()
	svc, err := c.Client.CoreV1().Services(ns).Create(ctx, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: corev1.ServiceSpec{
			Selector: map[string]string{"app": name},
			Ports:    []corev1.ServicePort{{Name: "http", Port: 80, TargetPort: intstr.FromInt32(8080), Protocol: corev1.ProtocolTCP}},
		},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return svc
}

// checkMeshlessChain reads the conflist at list and fails t unless its
// chain is bridge then meshless-cni with daemonSocket socket (what
// containerd will run); it returns the file's bytes.
func checkMeshlessChain(t *testing.T, list, socket string) []byte {
	t.Helper()
	b, err := os.ReadFile(list)
	if err != nil {
		t.Fatal(err)
	}
	var conf struct {
		Plugins []map[string]any `json:"plugins"`
	}
	if err := json.Unmarshal(b, &conf); err != nil {
		t.Fatalf("conflist %s: %v\n%s", list, err, b)
	}
	var types []string
	for _, p := range conf.Plugins {
		types = append(types, fmt.Sprint(p["type"]))
	}
	if !slices.Equal(types, []string{"bridge", "meshless-cni"}) || conf.Plugins[1]["daemonSocket"] != socket {
		t.Fatalf("conflist %s: plugins %v, want [bridge meshless-cni] with daemonSocket %s:\n%s", list, types, socket, b)
	}
	return b
}
