package k8s

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/meshless/meshless/tests/harness"
)

// restartBudget is how soon after the new daemon's pod is Ready a new
// connection of a pod meshed before the restart must work (issue 13).
const restartBudget = time.Second

// rolloutRestart runs `kubectl rollout restart ds/meshless` as a user
// upgrading or reconfiguring Meshless does, and checks that the server
// pod meshed before it is still meshed by the new daemon (its
// registration restored from the node's state dir, its rules untouched),
// and that a new connection from inside it to the Service's ClusterIP
// works through the new daemon within restartBudget of that daemon's pod
// being Ready. The test dials from the pod's netns itself, polling every
// 20 ms, so the figure is the mesh's and not a client pod's start-up.
func (in *installed) rolloutRestart(ctx context.Context, server *corev1.Pod, clusterIP string) {
	t, c, n := in.t, in.c, in.n
	old := in.daemonPodUID(ctx)
	_, netns, err := n.SandboxNetns(installNS, server.Name)
	if err != nil {
		t.Fatal(err)
	}
	in.kubectl(time.Minute, "-n", "meshless-system", "rollout", "restart", "ds/meshless")
	var ready time.Time
	waitUntil(t, "a new meshless pod Ready", 3*time.Minute, func() (bool, string) {
		pods, err := c.Client.CoreV1().Pods("meshless-system").List(ctx, metav1.ListOptions{LabelSelector: "app.kubernetes.io/name=meshless"})
		if err != nil {
			return false, err.Error()
		}
		for i := range pods.Items {
			p := &pods.Items[i]
			if p.UID != old && p.DeletionTimestamp == nil && podReady(p) {
				ready = time.Now()
				return true, ""
			}
		}
		return false, fmt.Sprintf("%d pods, none new and Ready", len(pods.Items))
	})
	var body string
	var last, first error
	tries := 0
	for time.Since(ready) < restartBudget+4*time.Second {
		tries++
		if body, last = getInNetns(ctx, n.netnsPath(netns), "http://"+clusterIP+"/"); last == nil {
			break
		}
		if first == nil {
			first = last
		}
		time.Sleep(20 * time.Millisecond) // polling pace, not a wait for state
	}
	took := time.Since(ready)
	if last != nil {
		t.Fatalf("no connection from %s to %s through the new daemon %v after it was Ready: %v", server.Name, clusterIP, took.Round(time.Millisecond), last)
	}
	t.Logf("after rollout restart: %s -> %s answered %v after the new daemon's pod was Ready (attempt %d; first failure: %v): %q",
		server.Name, clusterIP, took.Round(time.Millisecond), tries, first, strings.TrimSpace(body))
	if took > restartBudget {
		t.Errorf("first connection %v after the new daemon was Ready, want within %v", took.Round(time.Millisecond), restartBudget)
	}
	if !strings.Contains(body, "instance="+server.Name+" ") {
		t.Errorf("answer %q, want one from %s", body, server.Name)
	}
	// The new daemon's counters start at zero: the call is among them.
	if after := in.metric(localOutbound); after < 1 {
		t.Errorf("the new daemon's %s is %v after the call: it did not go through it", localOutbound, after)
	}
	n.checkMeshed(ctx, in.client, server)
}

// daemonPodUID returns the UID of the DaemonSet's one pod.
func (in *installed) daemonPodUID(ctx context.Context) types.UID {
	pods, err := in.c.Client.CoreV1().Pods("meshless-system").List(ctx, metav1.ListOptions{LabelSelector: "app.kubernetes.io/name=meshless"})
	if err != nil || len(pods.Items) != 1 {
		in.t.Fatalf("meshless pods: %v (%d, want 1)", err, len(pods.Items))
	}
	return pods.Items[0].UID
}

func podReady(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// getInNetns makes one HTTP GET on a new connection from inside the
// netns at path and returns the body.
func getInNetns(ctx context.Context, path, url string) (string, error) {
	hc := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{
		DisableKeepAlives: true,
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			return harness.DialInNetns(ctx, path, network, addr)
		},
	}}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return "", err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err == nil && resp.StatusCode != http.StatusOK {
		err = fmt.Errorf("status %s", resp.Status)
	}
	return string(b), err
}
