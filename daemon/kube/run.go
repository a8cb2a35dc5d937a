package kube

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/tools/cache"

	"github.com/meshless/meshless/daemon/routes"
)

// Run starts the informers and delivers models until ctx is done; it
// returns nil then. It may be called once.
func (s *Source) Run(ctx context.Context) error {
	if !s.running.CompareAndSwap(false, true) {
		return errors.New("kube: Run called twice")
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	defer func() {
		cancel() // the informers stop with ctx
		wg.Wait()
	}()
	for _, inf := range s.informers {
		wg.Go(func() { inf.Run(ctx.Done()) })
	}

	s.log.Info("kubernetes discovery: waiting for caches")
	syncs := make([]cache.InformerSynced, 0, len(s.informers))
	for _, inf := range s.informers {
		syncs = append(syncs, inf.HasSynced)
	}
	if !cache.WaitForCacheSync(ctx.Done(), syncs...) {
		return nil // ctx done
	}
	s.deliver(ctx, true)
	s.synced.Store(true)
	close(s.syncedCh)
	if s.opts.OnPods != nil {
		s.opts.OnPods()
	}
	s.log.Info("kubernetes discovery: synced", "status", s.summary())

	timer := time.NewTimer(time.Hour)
	timer.Stop()
	pending := false
	for {
		select {
		case <-ctx.Done():
			timer.Stop()
			return nil
		case <-s.kick:
			if !pending {
				pending = true
				timer.Reset(s.opts.Debounce)
			}
		case <-timer.C:
			pending = false
			s.deliver(ctx, false)
		}
	}
}

func (s *Source) trigger() {
	select {
	case s.kick <- struct{}{}:
	default:
	}
}

// deliver rebuilds the model from the caches and hands it on if it changed
// (always when first). Warnings are logged once, when they first appear.
func (s *Source) deliver(ctx context.Context, first bool) {
	t := s.build()
	m := t.model
	s.mu.Lock()
	changed := first || !reflect.DeepEqual(m, s.last)
	if changed {
		s.last = m
		s.st.LastUpdate = time.Now()
		s.st.Updates++
		s.st.Nodes, s.st.Services, s.st.Endpoints = len(m.Nodes), len(m.Services), countEndpoints(m)
		s.st.Workloads, s.st.Meshlets = len(m.Workloads), len(m.Meshlets)
	}
	var fresh []string
	for _, w := range t.warn {
		if !slices.Contains(s.st.Warnings, w) {
			fresh = append(fresh, w)
		}
	}
	s.st.Warnings = t.warn
	s.mu.Unlock()
	for _, w := range fresh {
		s.log.Warn("kubernetes discovery: " + w)
	}
	if s.status != nil {
		s.status.report(ctx, t.meshlets)
	}
	if changed && s.onModel != nil {
		s.onModel(m)
	}
}

func (s *Source) build() *translation {
	svcs, err1 := s.services.List(labels.Everything())
	eps, err2 := s.slices.List(labels.Everything())
	nodes, err3 := s.nodes.List(labels.Everything())
	pods, err4 := s.pods.List(labels.Everything())
	if err := errors.Join(err1, err2, err3, err4); err != nil {
		// Listers over an indexer do not fail; keep going with what we have.
		s.log.Error("kubernetes discovery: list from cache", "err", err)
	}
	var meshlets []*MeshletObject
	if s.meshlets != nil {
		for _, o := range s.meshlets.List() {
			if m, ok := o.(*MeshletObject); ok {
				meshlets = append(meshlets, m)
			}
		}
	}
	return translate(Objects{
		Services:       svcs,
		EndpointSlices: eps,
		Nodes:          nodes,
		Pod: func(ns, name string) *corev1.Pod {
			p, err := s.pods.Pods(ns).Get(name)
			if err != nil {
				return nil
			}
			return p
		},
		Pods:     pods,
		Meshlets: meshlets,
	}, s.opts.TunnelPort)
}

// meshlet returns the cached Meshlet namespace/name, or nil.
func (s *Source) meshlet(namespace, name string) *MeshletObject {
	if s.meshlets == nil {
		return nil
	}
	o, ok, err := s.meshlets.GetByKey(namespace + "/" + name)
	if err != nil || !ok {
		return nil
	}
	m, _ := o.(*MeshletObject)
	return m
}

func (s *Source) clearErr() {
	if !s.hasErr.Load() {
		return
	}
	s.mu.Lock()
	was := s.err
	s.err = nil
	s.hasErr.Store(false)
	s.mu.Unlock()
	if was != nil {
		s.log.Info("kubernetes discovery: API server answers again")
	}
}

func (s *Source) setErr(err error) {
	if err == nil {
		return
	}
	s.mu.Lock()
	first := s.err == nil
	s.err, s.errAt = err, time.Now()
	s.hasErr.Store(true)
	s.mu.Unlock()
	if first {
		s.log.Warn("kubernetes discovery: API server error; keeping the last model and retrying", "err", err)
	} else {
		s.log.Debug("kubernetes discovery: API server error", "err", err)
	}
}

// HasSynced reports whether the caches synced and the first model was
// delivered.
func (s *Source) HasSynced() bool { return s.synced.Load() }

// Synced is closed once the first model was delivered: wait on it to
// open the pods' listeners only after the routes are known.
func (s *Source) Synced() <-chan struct{} { return s.syncedCh }

// PodsOnNode returns the cached pods scheduled on node (spec.nodeName),
// trimmed to what the source keeps (see trimPod); nil before the caches
// synced. The pods are shared with the cache: do not modify them.
func (s *Source) PodsOnNode(node string) []*corev1.Pod {
	if !s.synced.Load() {
		return nil
	}
	all, err := s.pods.List(labels.Everything())
	if err != nil {
		return nil
	}
	var out []*corev1.Pod
	for _, p := range all {
		if p.Spec.NodeName == node {
			out = append(out, p)
		}
	}
	return out
}

// LastError returns the last error talking to the API server, or nil when
// there was none since it last answered.
func (s *Source) LastError() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.err
}

// Model returns the last delivered model (the zero Model before the first).
func (s *Source) Model() routes.Model {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.last
}

// Status returns the source's state.
func (s *Source) Status() Status {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.st
	st.Synced = s.synced.Load()
	st.Warnings = slices.Clone(st.Warnings)
	if s.err != nil {
		st.LastError, st.LastErrorTime = s.err.Error(), s.errAt
	}
	return st
}

func (s *Source) summary() string {
	st := s.Status()
	return fmt.Sprintf("%d nodes, %d services, %d endpoints, %d workloads, %d meshlets", st.Nodes, st.Services, st.Endpoints, st.Workloads, st.Meshlets)
}

func countEndpoints(m routes.Model) int {
	n := 0
	for _, s := range m.Services {
		n += len(s.Endpoints)
	}
	return n
}
