package watchone

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/watch"
)

// fakeObject is a ConfigMap-backed API: Get answers from a queue of
// results, Watch hands out fake watchers the test drives.
type fakeObject struct {
	mu       sync.Mutex
	gets     []getResult
	watchRVs []string
	watchers chan *watch.RaceFreeFakeWatcher
}

type getResult struct {
	cm  *corev1.ConfigMap
	err error
}

func newFake(gets ...getResult) *fakeObject {
	return &fakeObject{gets: gets, watchers: make(chan *watch.RaceFreeFakeWatcher, 10)}
}

func (f *fakeObject) funcs() Funcs[*corev1.ConfigMap] {
	return Funcs[*corev1.ConfigMap]{
		Get: func(context.Context) (*corev1.ConfigMap, error) {
			f.mu.Lock()
			defer f.mu.Unlock()
			if len(f.gets) == 0 {
				return nil, errors.New("no more gets scripted")
			}
			g := f.gets[0]
			if len(f.gets) > 1 {
				f.gets = f.gets[1:]
			}
			return g.cm, g.err
		},
		Watch: func(_ context.Context, rv string) (watch.Interface, error) {
			f.mu.Lock()
			f.watchRVs = append(f.watchRVs, rv)
			f.mu.Unlock()
			w := watch.NewRaceFreeFake()
			f.watchers <- w
			return w, nil
		},
	}
}

func cm(rv, data string) *corev1.ConfigMap {
	return &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "x", ResourceVersion: rv}, Data: map[string]string{"k": data}}
}

// seen is what on was called with: the data, or "-" for absent.
type seen struct {
	mu  sync.Mutex
	got []string
	ch  chan struct{}
}

func (s *seen) on(stopAt string) func(*corev1.ConfigMap, bool) bool {
	s.ch = make(chan struct{}, 100)
	return func(c *corev1.ConfigMap, exists bool) bool {
		v := "-"
		if exists {
			v = c.Data["k"]
		}
		s.mu.Lock()
		s.got = append(s.got, v)
		s.mu.Unlock()
		s.ch <- struct{}{}
		return v == stopAt
	}
}

func (s *seen) wait(t *testing.T, n int) []string {
	t.Helper()
	for {
		s.mu.Lock()
		got := append([]string(nil), s.got...)
		s.mu.Unlock()
		if len(got) >= n {
			return got
		}
		select {
		case <-s.ch:
		case <-time.After(10 * time.Second):
			t.Fatalf("on called %d times (%v), want %d", len(got), got, n)
		}
	}
}

func TestRunFollowsTheObject(t *testing.T) {
	notFound := apierrors.NewNotFound(schema.GroupResource{Resource: "configmaps"}, "x")
	f := newFake(getResult{err: notFound}, getResult{cm: cm("7", "b")})
	var s seen
	on := s.on("stop")
	done := make(chan error, 1)
	go func() { done <- Run(context.Background(), f.funcs(), on, slog.New(slog.DiscardHandler)) }()

	// Absent: on(nil, false), then a watch from "" (the start).
	s.wait(t, 1)
	w := <-f.watchers
	w.Add(cm("5", "a"))
	w.Modify(cm("6", "a2"))
	w.Delete(cm("6", "a2"))
	s.wait(t, 4)
	// The server ends the watch: Run gets again and watches from there.
	w.Stop()
	w = <-f.watchers
	// A 410 Gone ends the watch too, without backoff.
	w.Error(&apierrors.NewResourceExpired("too old").ErrStatus)
	w = <-f.watchers
	w.Modify(cm("9", "stop"))
	if err := <-done; err != nil {
		t.Fatalf("Run: %v", err)
	}
	got := s.wait(t, 7)
	want := []string{"-", "a", "a2", "-", "b", "b", "stop"}
	if len(got) != len(want) {
		t.Fatalf("on saw %v, want %v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("on saw %v, want %v", got, want)
		}
	}
	if rvs := f.watchRVs; len(rvs) != 3 || rvs[0] != "" || rvs[1] != "7" || rvs[2] != "7" {
		t.Errorf("watched from %q, want \"\", 7, 7", rvs)
	}
}

func TestRunRetriesErrorsUntilCanceled(t *testing.T) {
	f := newFake(getResult{err: errors.New("connection refused")})
	ctx, cancel := context.WithCancel(context.Background())
	var s seen
	on := s.on("")
	done := make(chan error, 1)
	go func() { done <- Run(ctx, f.funcs(), on, slog.New(slog.DiscardHandler)) }()
	cancel()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("Run = %v, want context.Canceled", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return after cancel")
	}
	if got := s.wait(t, 0); len(got) != 0 {
		t.Errorf("on called on a failing Get: %v", got)
	}
}
