package k8s

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/meshless/meshless/daemon/cniapi"
	"github.com/meshless/meshless/internal/nstest"
	"github.com/meshless/meshless/tests/harness"
)

// testDaemon runs the real meshlessd with --kubeconfig against the cluster
// and checks that its routing table, as `meshlessctl status` shows it,
// follows a Service and its Pod.
func testDaemon(ctx context.Context, t *testing.T, c *Cluster) {
	nstest.RequireRoot(t)
	const ns = "default"
	d := harness.StartDaemon(t, harness.Binaries(t), harness.DaemonOptions{
		NodeName: "n1",
		Args:     []string{"--kubeconfig", c.Kubeconfig, "--tunnel-addr", "127.0.0.1:0"},
	})
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

	if _, err := c.Client.CoreV1().Services(ns).Create(ctx, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "api"},
		Spec: corev1.ServiceSpec{
			Selector: map[string]string{"app": "api"},
			Ports:    []corev1.ServicePort{{Name: "http", Port: 80, TargetPort: intstr.FromInt32(8080), Protocol: corev1.ProtocolTCP}},
		},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Client.CoreV1().Pods(ns).Create(ctx, testPod("api-1", "n1", map[string]string{"app": "api"}), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	c.SetPodStatus(ctx, ns, "api-1", "198.19.1.20", true)
	want := "198.19.1.20@n1"
	took := waitFor("the ready pod", func(eps []string) bool { return slices.Contains(eps, want) })
	t.Logf("meshlessd routes %s/api -> %s %v after the pod became ready", ns, want, took.Round(time.Millisecond))

	if err := c.Client.CoreV1().Pods(ns).Delete(ctx, "api-1", metav1.DeleteOptions{GracePeriodSeconds: new(int64)}); err != nil {
		t.Fatal(err)
	}
	took = waitFor("the pod's removal", func(eps []string) bool { return eps != nil && !slices.Contains(eps, want) })
	t.Logf("meshlessd dropped %s %v after the pod was deleted", want, took.Round(time.Millisecond))
	if _, src := endpoints(); src != fmt.Sprintf("kubernetes (%s)", c.Kubeconfig) {
		t.Errorf("status discovery = %q, want kubernetes with the kubeconfig", src)
	}
}
