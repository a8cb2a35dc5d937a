package kube

import (
	"context"
	"log/slog"
	"net/netip"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"

	"github.com/meshless/meshless/daemon/routes"
)

type recorder struct {
	mu     sync.Mutex
	models []routes.Model
	ch     chan struct{}
}

func newRecorder() *recorder { return &recorder{ch: make(chan struct{}, 100)} }

func (r *recorder) on(m routes.Model) {
	r.mu.Lock()
	r.models = append(r.models, m)
	r.mu.Unlock()
	r.ch <- struct{}{}
}

func (r *recorder) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.models)
}

// waitFor waits for a delivered model that satisfies ok.
func (r *recorder) waitFor(t *testing.T, what string, ok func(routes.Model) bool) routes.Model {
	t.Helper()
	deadline := time.After(5 * time.Second)
	for {
		r.mu.Lock()
		if n := len(r.models); n > 0 && ok(r.models[n-1]) {
			m := r.models[n-1]
			r.mu.Unlock()
			return m
		}
		r.mu.Unlock()
		select {
		case <-r.ch:
		case <-deadline:
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

func endpointIPs(m routes.Model, ns, name string) []netip.Addr {
	for _, s := range m.Services {
		if s.Namespace == ns && s.Name == name {
			ips := []netip.Addr{}
			for _, e := range s.Endpoints {
				ips = append(ips, e.IP)
			}
			return ips
		}
	}
	return nil
}

func TestSourceFollowsChanges(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	cs := fake.NewClientset(
		node("n1", "198.18.0.1", "198.19.1.0/24"),
		svc("default", "web", []string{"198.18.128.10"}, sport("http", 80, intstr.FromInt32(8080))),
		slice("default", "web", "web-a", map[string]int32{"http": 8080}, epSpec{ip: "198.19.1.2", node: "n1", pod: "web-1"}),
		pod("default", "web-1", "n1", map[string]string{"app": "web"}),
	)
	rec := newRecorder()
	src := NewForClient(cs, rec.on, nil, Options{Debounce: 20 * time.Millisecond})
	if src.HasSynced() {
		t.Fatal("synced before Run")
	}
	done := make(chan error, 1)
	go func() { done <- src.Run(ctx) }()

	m := rec.waitFor(t, "first model", func(m routes.Model) bool { return len(m.Services) == 1 })
	select {
	case <-src.Synced():
	case <-time.After(5 * time.Second):
		t.Fatal("Synced not closed after the first model")
	}
	if !src.HasSynced() {
		t.Fatal("HasSynced false after Synced")
	}
	if got := m.Services[0].Endpoints; len(got) != 1 || got[0].Labels["app"] != "web" || got[0].Node != "n1" {
		t.Fatalf("endpoints %+v", got)
	}
	if m.Nodes[0].Tunnel != ap("198.18.0.1:15008") {
		t.Fatalf("nodes %+v", m.Nodes)
	}

	// A second endpoint.
	es := slice("default", "web", "web-a", map[string]int32{"http": 8080},
		epSpec{ip: "198.19.1.2", node: "n1", pod: "web-1"}, epSpec{ip: "198.19.1.3", node: "n1"})
	if _, err := cs.DiscoveryV1().EndpointSlices("default").Update(ctx, es, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	rec.waitFor(t, "two endpoints", func(m routes.Model) bool { return len(endpointIPs(m, "default", "web")) == 2 })

	// A pod status change alone delivers nothing new.
	n := rec.count()
	p := pod("default", "web-1", "n1", map[string]string{"app": "web"})
	p.Status.Phase = corev1.PodRunning
	if _, err := cs.CoreV1().Pods("default").Update(ctx, p, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	// A label change does.
	p = pod("default", "web-1", "n1", map[string]string{"app": "web", "version": "v2"})
	if _, err := cs.CoreV1().Pods("default").Update(ctx, p, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	rec.waitFor(t, "new labels", func(m routes.Model) bool {
		return len(m.Services) == 1 && m.Services[0].Endpoints[0].Labels["version"] == "v2"
	})
	if got := rec.count(); got != n+1 {
		t.Errorf("%d models delivered for a status change and a label change, want 1", got-n)
	}

	// Node address change.
	nd := node("n1", "198.18.0.9", "198.19.1.0/24")
	if _, err := cs.CoreV1().Nodes().Update(ctx, nd, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	rec.waitFor(t, "new tunnel", func(m routes.Model) bool { return m.Nodes[0].Tunnel == ap("198.18.0.9:15008") })

	// Service deleted.
	if err := cs.CoreV1().Services("default").Delete(ctx, "web", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	rec.waitFor(t, "service gone", func(m routes.Model) bool { return len(m.Services) == 0 })

	st := src.Status()
	if !st.Synced || st.Services != 0 || st.Nodes != 1 || st.Updates < 5 || st.LastError != "" {
		t.Errorf("status %+v", st)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return after cancel")
	}
}

func TestSourceDebounces(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	cs := fake.NewClientset(svc("default", "web", []string{"198.18.128.10"}, sport("", 80, intstr.FromInt32(80))))
	rec := newRecorder()
	src := NewForClient(cs, rec.on, nil, Options{Debounce: 300 * time.Millisecond})
	go src.Run(ctx)
	rec.waitFor(t, "first model", func(m routes.Model) bool { return len(m.Services) == 1 })
	n := rec.count()
	for i := range 10 {
		es := slice("default", "web", "web-a", map[string]int32{"": 80}, epSpec{ip: netip.AddrFrom4([4]byte{198, 19, 1, byte(10 + i)}).String(), node: "n1"})
		var err error
		if i == 0 {
			_, err = cs.DiscoveryV1().EndpointSlices("default").Create(ctx, es, metav1.CreateOptions{})
		} else {
			_, err = cs.DiscoveryV1().EndpointSlices("default").Update(ctx, es, metav1.UpdateOptions{})
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	m := rec.waitFor(t, "last endpoint", func(m routes.Model) bool {
		ips := endpointIPs(m, "default", "web")
		return len(ips) == 1 && ips[0] == a("198.19.1.19")
	})
	_ = m
	if got := rec.count() - n; got > 2 {
		t.Errorf("%d models for a burst of 10 changes, want 1 (2 at most)", got)
	}
}

func TestNewNeedsConfig(t *testing.T) {
	if _, err := New(nil, nil, nil); err == nil {
		t.Fatal("New(nil) succeeded")
	}
	if _, err := New(&rest.Config{Host: "https://198.18.0.1:6443"}, nil, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := RESTConfig("/nonexistent/kubeconfig"); err == nil {
		t.Fatal("RESTConfig of a missing file succeeded")
	}
}

// NewForClient returns a Source over a (fake) clientset, for tests. The
// daemon itself never links the clientset (see client.go).
func NewForClient(cs kubernetes.Interface, onModel func(routes.Model), log *slog.Logger, opts Options) *Source {
	s := newSource(onModel, log, opts)
	s.init(clientListWatchers(cs))
	return s
}

// clientListWatchers returns list-watchers over a (fake) clientset; it
// has no Meshlet type, so they do not watch Meshlets.
func clientListWatchers(cs kubernetes.Interface) listWatchers {
	lw := func(list func(context.Context, metav1.ListOptions) (runtime.Object, error), watch func(context.Context, metav1.ListOptions) (watch.Interface, error)) cache.ListerWatcher {
		// The fake clientset cannot stream lists (WatchList): say so, as
		// the generated informers do, so the reflector lists instead.
		return cache.ToListWatcherWithWatchListSemantics(&cache.ListWatch{
			ListWithContextFunc:  list,
			WatchFuncWithContext: watch,
		}, cs)
	}
	return listWatchers{
		services: lw(func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) {
			return cs.CoreV1().Services("").List(ctx, o)
		},
			func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
				return cs.CoreV1().Services("").Watch(ctx, o)
			}),
		slices: lw(func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) {
			return cs.DiscoveryV1().EndpointSlices("").List(ctx, o)
		},
			func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
				return cs.DiscoveryV1().EndpointSlices("").Watch(ctx, o)
			}),
		pods: lw(func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) {
			return cs.CoreV1().Pods("").List(ctx, o)
		},
			func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
				return cs.CoreV1().Pods("").Watch(ctx, o)
			}),
		nodes: lw(func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) {
			return cs.CoreV1().Nodes().List(ctx, o)
		},
			func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
				return cs.CoreV1().Nodes().Watch(ctx, o)
			}),
	}
}
