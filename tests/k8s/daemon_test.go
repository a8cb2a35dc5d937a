package k8s

import (
	"context"
	"fmt"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/meshless/meshless/daemon/cniapi"
	"github.com/meshless/meshless/internal/idtest"
	"github.com/meshless/meshless/internal/nstest"
	"github.com/meshless/meshless/tests/harness"
)

// startKubeDaemon runs meshlessd with --kubeconfig against c. Its TLS
// material comes from a test CA: with a static token, not a pod-bound one,
// the signer would refuse it.
func startKubeDaemon(t *testing.T, c *Cluster, tunnelAddr string) *harness.Daemon {
	tlsDir := t.TempDir()
	idtest.NewCA(t).Issue(t, "n1", tlsDir)
	return harness.StartDaemon(t, harness.Binaries(t), harness.DaemonOptions{
		NodeName: "n1",
		Args:     []string{"--kubeconfig", c.Kubeconfig, "--tunnel-addr", tunnelAddr, "--tls-dir", tlsDir},
	})
}

// waitSynced waits until the daemon's table holds the cluster's nodes,
// and checks that their tunnels have the daemon's tunnel port.
func waitSynced(ctx context.Context, t *testing.T, client *cniapi.Client, port int) {
	// The daemon has synced once its table holds the cluster's nodes.
	for start := time.Now(); ; time.Sleep(20 * time.Millisecond) {
		st, err := client.Status(ctx)
		if err != nil {
			t.Fatalf("daemon status: %v", err)
		}
		if len(st.Nodes) > 0 {
			t.Logf("meshlessd synced with the API server in %v", time.Since(start).Round(time.Millisecond))
			for _, n := range st.Nodes {
				if !strings.HasSuffix(n.Tunnel, fmt.Sprintf(":%d", port)) {
					t.Errorf("node %s's tunnel %s, want port %d (--tunnel-addr's)", n.Name, n.Tunnel, port)
				}
			}
			break
		}
		if time.Since(start) > 30*time.Second {
			t.Fatalf("meshlessd did not sync in 30s: %+v", st)
		}
	}

}

// freeLoopbackPort returns a port free on loopback right now.
func freeLoopbackPort(t *testing.T) int {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// testDaemon runs the real meshlessd with --kubeconfig against the cluster
// and checks that its routing table, as `meshlessctl status` shows it,
// follows a Service and its Pod.
func testDaemon(ctx context.Context, t *testing.T, c *Cluster) {
	nstest.RequireRoot(t)
	const ns = "default"
	// A tunnel port other than 15008: the nodes' tunnels in its table must
	// have it too (the API server does not know it).
	port := freeLoopbackPort(t)
	d := startKubeDaemon(t, c, fmt.Sprintf("127.0.0.1:%d", port))
	client := cniapi.NewClient(d.Socket)
	endpoints := func() ([]string, string) {
		st, err := client.Status(ctx)
		if err != nil {
			t.Fatalf("daemon status: %v", err)
		}
		for _, s := range st.Services {
			if s.Name == ns+"/api" {
				return s.Endpoints, st.Discovery
			}
		}
		return nil, st.Discovery
	}
	waitFor := func(what string, ok func([]string) bool) time.Duration {
		t.Helper()
		start := time.Now()
		for time.Since(start) < 15*time.Second {
			if eps, _ := endpoints(); ok(eps) {
				return time.Since(start)
			}
			time.Sleep(20 * time.Millisecond) // polling interval
		}
		eps, src := endpoints()
		t.Fatalf("daemon (discovery %q): %s not seen in 15s; endpoints of %s/api: %v", src, what, ns, eps)
		return 0
	}

	waitSynced(ctx, t, client, port)

	if _, err := c.Client.CoreV1().Services(ns).Create(ctx, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "api"},
		Spec: corev1.ServiceSpec{
			Selector: map[string]string{"app": "api"},
			Ports:    []corev1.ServicePort{{Name: "http", Port: 80, TargetPort: intstr.FromInt32(8080), Protocol: corev1.ProtocolTCP}},
		},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	// The Service first, so that what is timed is one endpoint change.
	for start := time.Now(); ; time.Sleep(20 * time.Millisecond) {
		if eps, _ := endpoints(); eps != nil {
			break
		}
		if time.Since(start) > 15*time.Second {
			t.Fatalf("meshlessd did not learn of service %s/api in 15s", ns)
		}
	}
	if _, err := c.Client.CoreV1().Pods(ns).Create(ctx, testPod("api-1", "n1", map[string]string{"app": "api"}), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	sw := watchSlices(ctx, t, c, ns)
	readyAt := time.Now()
	c.SetPodStatus(ctx, ns, "api-1", "198.19.1.20", true)
	want := "198.19.1.20@n1"
	took := waitFor("the ready pod", func(eps []string) bool { return slices.Contains(eps, want) })
	seen := readyAt.Add(took)
	// The EndpointSlice controller's own delay is not the daemon's: time
	// the daemon from the slice update it reacts to.
	sliceAt, ok := sw.firstReady("api", readyAt, []string{"198.19.1.20"})
	if !ok {
		t.Fatalf("no EndpointSlice of %s/api with the pod was seen", ns)
	}
	t.Logf("meshlessd routes %s/api -> %s %v after the pod became ready, %v after the EndpointSlice update",
		ns, want, took.Round(time.Millisecond), seen.Sub(sliceAt).Round(time.Millisecond))
	if d := seen.Sub(sliceAt); d > time.Second {
		t.Errorf("the endpoint reached the daemon's table %v after the EndpointSlice update, want within a second", d)
	}

	if err := c.Client.CoreV1().Pods(ns).Delete(ctx, "api-1", metav1.DeleteOptions{GracePeriodSeconds: new(int64)}); err != nil {
		t.Fatal(err)
	}
	took = waitFor("the pod's removal", func(eps []string) bool { return eps != nil && !slices.Contains(eps, want) })
	t.Logf("meshlessd dropped %s %v after the pod was deleted", want, took.Round(time.Millisecond))
	if took > time.Second {
		t.Errorf("the removal reached the daemon's table after %v, want within a second", took)
	}
	if _, src := endpoints(); src != fmt.Sprintf("kubernetes (%s)", c.Kubeconfig) {
		t.Errorf("status discovery = %q, want kubernetes with the kubeconfig", src)
	}
}
