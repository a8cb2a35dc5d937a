package kube

import (
	"context"
	"errors"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/client-go/tools/cache"

	"github.com/meshless/meshless/daemon/meshlet"
	"github.com/meshless/meshless/daemon/routes"
)

// fakeMeshlets is an in-memory Meshlet API: list, watch and the status
// subresource's update with resourceVersion conflicts, as the apiserver.
type fakeMeshlets struct {
	mu       sync.Mutex
	rv       int
	objs     map[string]*MeshletObject
	watchers []*watch.RaceFreeFakeWatcher
	writes   []*MeshletObject // status updates that succeeded
	// updateErr, if set, answers status updates instead.
	updateErr error
}

func newFakeMeshlets() *fakeMeshlets { return &fakeMeshlets{objs: map[string]*MeshletObject{}} }

func (f *fakeMeshlets) lw() cache.ListerWatcher {
	return &noWatchList{&cache.ListWatch{
		ListWithContextFunc: func(context.Context, metav1.ListOptions) (runtime.Object, error) {
			f.mu.Lock()
			defer f.mu.Unlock()
			l := &MeshletList{ListMeta: metav1.ListMeta{ResourceVersion: strconv.Itoa(f.rv)}}
			for _, o := range f.objs {
				l.Items = append(l.Items, *o.DeepCopy())
			}
			return l, nil
		},
		WatchFuncWithContext: func(context.Context, metav1.ListOptions) (watch.Interface, error) {
			f.mu.Lock()
			defer f.mu.Unlock()
			w := watch.NewRaceFreeFake()
			f.watchers = append(f.watchers, w)
			return w, nil
		},
	}}
}

// noWatchList makes the reflector list and watch.
type noWatchList struct{ *cache.ListWatch }

func (noWatchList) IsWatchListSemanticsUnSupported() bool { return true }

// put creates or replaces o (spec changes bump the generation).
func (f *fakeMeshlets) put(o *MeshletObject) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.rv++
	o = o.DeepCopy()
	o.ResourceVersion = strconv.Itoa(f.rv)
	ev := watch.Added
	if old, ok := f.objs[o.Namespace+"/"+o.Name]; ok {
		ev = watch.Modified
		o.Generation, o.Status = old.Generation+1, old.Status
	}
	f.objs[o.Namespace+"/"+o.Name] = o
	f.send(ev, o)
}

func (f *fakeMeshlets) remove(ns, name string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	o := f.objs[ns+"/"+name]
	delete(f.objs, ns+"/"+name)
	f.rv++
	f.send(watch.Deleted, o)
}

func (f *fakeMeshlets) send(t watch.EventType, o *MeshletObject) {
	for _, w := range f.watchers {
		if !w.IsStopped() {
			w.Action(t, o.DeepCopy())
		}
	}
}

// updateStatus is the status subresource: only the status changes, and
// a stale resourceVersion is a conflict.
func (f *fakeMeshlets) updateStatus(_ context.Context, u *MeshletObject) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.updateErr != nil {
		return f.updateErr
	}
	gr := schema.GroupResource{Group: meshlet.Group, Resource: meshlet.Resource}
	o, ok := f.objs[u.Namespace+"/"+u.Name]
	if !ok {
		return apierrors.NewNotFound(gr, u.Name)
	}
	if o.ResourceVersion != u.ResourceVersion {
		return apierrors.NewConflict(gr, u.Name, errors.New("the object has been modified"))
	}
	f.rv++
	o.ResourceVersion, o.Status = strconv.Itoa(f.rv), u.DeepCopy().Status
	f.writes = append(f.writes, u.DeepCopy())
	f.send(watch.Modified, o)
	return nil
}

func (f *fakeMeshlets) accepted(ns, name string) (metav1.ConditionStatus, string, int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	o, ok := f.objs[ns+"/"+name]
	if !ok {
		return "", "", len(f.writes)
	}
	c := meta.FindStatusCondition(o.Status.Conditions, ConditionAccepted)
	if c == nil || c.ObservedGeneration != o.Generation {
		return "", "", len(f.writes)
	}
	return c.Status, c.Message, len(f.writes)
}

// newMeshSource is NewForClient plus a fake Meshlet API.
func newMeshSource(cs *fake.Clientset, f *fakeMeshlets, onModel func(routes.Model), log *slog.Logger) *Source {
	s := newSource(onModel, log, Options{Debounce: 10 * time.Millisecond, StatusDelay: 20 * time.Millisecond})
	lws := clientListWatchers(cs)
	lws.meshlets, lws.updateStatus = f.lw(), f.updateStatus
	s.init(lws)
	return s
}

// poll waits for cond, checking every few milliseconds.
func poll(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// logLines collects log records' messages.
type logLines struct {
	mu    sync.Mutex
	lines []string
}

func (l *logLines) Enabled(context.Context, slog.Level) bool { return true }
func (l *logLines) Handle(_ context.Context, r slog.Record) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.lines = append(l.lines, r.Message)
	return nil
}
func (l *logLines) WithAttrs([]slog.Attr) slog.Handler { return l }
func (l *logLines) WithGroup(string) slog.Handler      { return l }
func (l *logLines) count(sub string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, s := range l.lines {
		if strings.Contains(s, sub) {
			n++
		}
	}
	return n
}

func TestSourceMeshlets(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	p := ipPod("shop", "web-1", "n1", "web", 0, map[string]string{meshlet.LabelMeshlet: "web"}, "198.19.1.2")
	cs := fake.NewClientset(node("n1", "198.18.0.1", "198.19.1.0/24"), p)
	f := newFakeMeshlets()
	f.put(meshletObj("shop", "web", 0, `{"server":{"services":[{"name":"web","maxConn":10}]}}`))
	rec := newRecorder()
	logs := &logLines{}
	src := newMeshSource(cs, f, rec.on, slog.New(logs))
	done := make(chan error, 1)
	go func() { done <- src.Run(ctx) }()

	hasMeshlet := func(name string, maxConn int) func(routes.Model) bool {
		return func(m routes.Model) bool {
			for _, x := range m.Meshlets {
				if x.Name == name {
					return maxConn < 0 || x.Spec.Server.Services[0].MaxConn == maxConn
				}
			}
			return false
		}
	}
	m := rec.waitFor(t, "the Meshlet and the workload", func(m routes.Model) bool {
		return hasMeshlet("web", 10)(m) && len(m.Workloads) == 1
	})
	if w := m.Workloads[0]; w.ServiceAccount != "web" || w.MeshletName() != "web" {
		t.Errorf("workload %+v", w)
	}
	poll(t, "Accepted=True", func() bool { st, _, _ := f.accepted("shop", "web"); return st == metav1.ConditionTrue })

	// Changed to something the schema would not have caught: left out,
	// logged once, and the status says what to fix.
	f.put(meshletObj("shop", "web", 0, `{"server":{"services":[{"name":"web","idleTimeout":"9999999999h"}]}}`))
	rec.waitFor(t, "the invalid Meshlet left out", func(m routes.Model) bool { return !hasMeshlet("web", -1)(m) })
	poll(t, "Accepted=False", func() bool {
		st, msg, _ := f.accepted("shop", "web")
		return st == metav1.ConditionFalse && strings.Contains(msg, `spec.server.services[0].idleTimeout: invalid duration "9999999999h"`)
	})
	if st := src.Status(); len(st.Warnings) != 1 || !strings.Contains(st.Warnings[0], "meshlet shop/web left out") {
		t.Errorf("status warnings %q", st.Warnings)
	}
	// Other changes do not log it again.
	if _, err := cs.CoreV1().Nodes().Update(ctx, node("n1", "198.18.0.9", "198.19.1.0/24"), metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	rec.waitFor(t, "the node change", func(m routes.Model) bool { return m.Nodes[0].Tunnel == ap("198.18.0.9:15008") })
	if n := logs.count("meshlet shop/web left out"); n != 1 {
		t.Errorf("the rejected Meshlet was logged %d times, want once", n)
	}

	// Fixed, then a second Meshlet, then deleted.
	f.put(meshletObj("shop", "web", 0, `{"server":{"services":[{"name":"web","maxConn":20}]}}`))
	rec.waitFor(t, "the fixed Meshlet", hasMeshlet("web", 20))
	poll(t, "Accepted=True again", func() bool { st, _, _ := f.accepted("shop", "web"); return st == metav1.ConditionTrue })
	f.put(meshletObj("shop", "client", time.Hour, `{"client":[{"meshlet":"web","service":"web"}]}`))
	rec.waitFor(t, "the second Meshlet", hasMeshlet("client", -1))
	f.remove("shop", "web")
	rec.waitFor(t, "the deleted Meshlet gone", func(m routes.Model) bool { return !hasMeshlet("web", -1)(m) && hasMeshlet("client", -1)(m) })
	if st := src.Status(); st.Meshlets != 1 || st.Workloads != 1 {
		t.Errorf("status counts %+v", st)
	}

	// One write per verdict: nothing is rewritten while nothing changes.
	poll(t, "client accepted", func() bool { st, _, _ := f.accepted("shop", "client"); return st == metav1.ConditionTrue })
	_, _, writes := f.accepted("shop", "client")
	if writes != 4 {
		t.Errorf("%d status writes, want 4 (web true, false, true; client true)", writes)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// Two daemons report the same verdict: both see the Meshlet without status,
// one writes, the other finds it written (or gets a conflict) and drops its
// own.
func TestStatusWriterOneOfMany(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	f := newFakeMeshlets()
	f.put(meshletObj("shop", "web", 0, `{}`))
	get := func(ns, name string) *MeshletObject {
		f.mu.Lock()
		defer f.mu.Unlock()
		return f.objs[ns+"/"+name].DeepCopy()
	}
	results := []meshletResult{{obj: get("shop", "web")}}
	var ws []*statusWriter
	for range 5 {
		w := &statusWriter{update: f.updateStatus, get: get, log: slog.New(slog.DiscardHandler), delay: 50 * time.Millisecond}
		w.report(ctx, results) // all from the same stale object
		ws = append(ws, w)
	}
	poll(t, "Accepted", func() bool { st, _, _ := f.accepted("shop", "web"); return st == metav1.ConditionTrue })
	poll(t, "all writers done", func() bool {
		for _, w := range ws {
			w.mu.Lock()
			n := len(w.pending)
			w.mu.Unlock()
			if n > 0 {
				return false
			}
		}
		return true
	})
	if _, _, writes := f.accepted("shop", "web"); writes != 1 {
		t.Errorf("%d writes from 5 daemons, want 1", writes)
	}
}

func TestStatusWriterForbidden(t *testing.T) {
	f := newFakeMeshlets()
	f.put(meshletObj("shop", "web", 0, `{}`))
	f.updateErr = apierrors.NewForbidden(schema.GroupResource{Group: meshlet.Group, Resource: "meshlets/status"}, "web", errors.New("RBAC"))
	get := func(ns, name string) *MeshletObject { return f.objs[ns+"/"+name] }
	logs := &logLines{}
	w := &statusWriter{update: f.updateStatus, get: get, log: slog.New(logs), delay: time.Millisecond}
	w.report(context.Background(), []meshletResult{{obj: get("shop", "web")}})
	poll(t, "the warning", func() bool { return logs.count("cannot write Meshlet status") == 1 })
	w.report(context.Background(), []meshletResult{{obj: get("shop", "web"), errs: []string{"x"}}})
	w.mu.Lock()
	disabled, pending := w.disabled, len(w.pending)
	w.mu.Unlock()
	if !disabled || pending != 0 {
		t.Errorf("after forbidden: disabled %v, %d pending writes", disabled, pending)
	}
}

// notFound is what the apiserver answers for a resource without CRD.
var notFound = apierrors.NewNotFound(schema.GroupResource{Group: meshlet.Group, Resource: meshlet.Resource}, "")

func TestOptionalResource(t *testing.T) {
	var missing bool
	items := false
	o := &optionalResource{
		lw: &cache.ListWatch{
			ListWithContextFunc: func(context.Context, metav1.ListOptions) (runtime.Object, error) {
				if missing {
					return nil, notFound
				}
				return &MeshletList{Items: []MeshletObject{{}}}, nil
			},
			WatchFuncWithContext: func(context.Context, metav1.ListOptions) (watch.Interface, error) {
				if missing {
					return nil, notFound
				}
				return watch.NewFake(), nil
			},
		},
		emptyList: func() runtime.Object { return &MeshletList{} },
		idle:      20 * time.Millisecond,
		haveItems: func() bool { return items },
	}
	missing = true
	obj, err := o.ListWithContext(context.Background(), metav1.ListOptions{})
	if l, ok := obj.(*MeshletList); err != nil || !ok || len(l.Items) != 0 {
		t.Fatalf("list without CRD: %v %v, want an empty list", obj, err)
	}
	items = true
	if _, err := o.List(metav1.ListOptions{}); !apierrors.IsNotFound(err) {
		t.Fatalf("404 with objects cached: %v, want it passed on", err)
	}
	start := time.Now()
	w, err := o.Watch(metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, open := <-w.ResultChan(); open {
		t.Fatal("idle watch sent an event")
	}
	if d := time.Since(start); d < 20*time.Millisecond {
		t.Errorf("idle watch ended after %v, want >= 20ms", d)
	}
	w, _ = o.WatchWithContext(context.Background(), metav1.ListOptions{})
	w.Stop()
	w.Stop() // twice is fine
	if _, open := <-w.ResultChan(); open {
		t.Fatal("stopped idle watch sent an event")
	}
	missing = false
	if obj, err := o.List(metav1.ListOptions{}); err != nil || len(obj.(*MeshletList).Items) != 1 {
		t.Errorf("list with CRD: %v %v", obj, err)
	}
	if !o.IsWatchListSemanticsUnSupported() {
		t.Error("watch-list must be off")
	}
}

// TestSourceWithoutCRD: the Meshlet list answers 404; the source syncs and
// delivers the rest of the model.
func TestSourceWithoutCRD(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	cs := fake.NewClientset(node("n1", "198.18.0.1", "198.19.1.0/24"))
	rec := newRecorder()
	src := newSource(rec.on, nil, Options{Debounce: 10 * time.Millisecond})
	lws := clientListWatchers(cs)
	lws.meshlets = &optionalResource{
		lw: &cache.ListWatch{
			ListWithContextFunc:  func(context.Context, metav1.ListOptions) (runtime.Object, error) { return nil, notFound },
			WatchFuncWithContext: func(context.Context, metav1.ListOptions) (watch.Interface, error) { return nil, notFound },
		},
		emptyList: func() runtime.Object { return &MeshletList{} },
		idle:      time.Second,
	}
	src.init(lws)
	go src.Run(ctx)
	rec.waitFor(t, "a model without the CRD", func(m routes.Model) bool { return len(m.Nodes) == 1 })
	if err := src.LastError(); err != nil {
		t.Errorf("LastError %v: a missing CRD is not an API server error", err)
	}
}
