// Package kube is the Kubernetes discovery source of the routing table: it
// watches Services, EndpointSlices (discovery.k8s.io/v1), Pods and Nodes
// with client-go informers and hands a complete routes.Model to a
// callback after every change.
//
//	cfg, err := kube.RESTConfig(kubeconfig) // "" = in-cluster
//	src, err := kube.New(cfg, func(m routes.Model) {
//		if err := table.Update(m); err != nil { log.Error(...) }
//	}, log)
//	go src.Run(ctx)            // returns nil when ctx is done
//	<-src.Synced()             // the first model was delivered (or select on ctx)
//	src.HasSynced()            // the same, for /readyz; stays true in outages
//	src.LastError()            // nil, or why the API server is unreachable
//	src.Status()               // JSON-ready, for meshlessctl status
//
// Changes are debounced: the first event after a quiet period starts a
// window (Options.Debounce, 50 ms by default) and the model is rebuilt from
// the informers' caches at its end, so a burst of events gives one model and
// no event waits longer than the window. A model equal to the last delivered
// one is not delivered again.
//
// When the API server goes away, the informers keep their caches and retry
// with backoff; no model is delivered during the outage, so the routing
// table keeps the last known one, and the relist after the reconnect
// delivers whatever changed meanwhile. The callback is never called before
// the caches have synced, so it never sees an empty model that only means
// "not connected yet".
//
// RBAC: get, list and watch on services, pods and nodes ("" group) and
// endpointslices (discovery.k8s.io), nothing else.
package kube

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/http"
	"reflect"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	listerscorev1 "k8s.io/client-go/listers/core/v1"
	listersdiscoveryv1 "k8s.io/client-go/listers/discovery/v1"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/meshless/meshless/daemon/routes"
)

// Options tune a Source; the zero value gives the defaults.
type Options struct {
	// TunnelPort is the node daemons' tunnel port; DefaultTunnelPort when 0.
	TunnelPort uint16
	// Debounce is the window that collects events into one model; 50 ms
	// when 0.
	Debounce time.Duration
	// Resync is the informers' resync period; 0 (none) is right here: the
	// model is rebuilt from the caches, not from the events.
	Resync time.Duration
	// OnPods, if set, is called after the caches synced and after every
	// Pod event (status changes included), from the informer's goroutine:
	// it must return at once (signal a channel). Read the pods with
	// Source.PodsOnNode.
	OnPods func()
}

// Status is the source's state for status pages.
type Status struct {
	// Synced reports whether the caches synced and the first model was
	// delivered.
	Synced bool `json:"synced"`
	// LastError is the last error talking to the API server; empty once
	// it answers a request again.
	LastError string `json:"lastError,omitempty"`
	// LastErrorTime is when LastError happened.
	LastErrorTime time.Time `json:"lastErrorTime,omitzero"`
	// LastUpdate is when the last model was delivered.
	LastUpdate time.Time `json:"lastUpdate,omitzero"`
	// Updates counts the models delivered.
	Updates uint64 `json:"updates"`
	// Nodes, Services and Endpoints count the last model's items.
	Nodes     int `json:"nodes"`
	Services  int `json:"services"`
	Endpoints int `json:"endpoints"`
	// Warnings are the last translation's warnings (items left out).
	Warnings []string `json:"warnings,omitempty"`
}

// Source watches the Kubernetes API and delivers routing models.
type Source struct {
	onModel func(routes.Model)
	log     *slog.Logger
	opts    Options

	informers []cache.SharedIndexInformer
	services  listerscorev1.ServiceLister
	slices    listersdiscoveryv1.EndpointSliceLister
	pods      listerscorev1.PodLister
	nodes     listerscorev1.NodeLister

	kick     chan struct{}
	syncedCh chan struct{}
	synced   atomic.Bool
	running  atomic.Bool
	hasErr   atomic.Bool

	mu     sync.Mutex
	status Status
	last   routes.Model
	errAt  time.Time
	err    error
}

// RESTConfig returns the client configuration for the kubeconfig file at
// path, or the in-cluster configuration (service account token and
// KUBERNETES_SERVICE_HOST) when path is empty.
func RESTConfig(path string) (*rest.Config, error) {
	var cfg *rest.Config
	var err error
	if path == "" {
		cfg, err = rest.InClusterConfig()
	} else {
		cfg, err = clientcmd.BuildConfigFromFlags("", path)
	}
	if err != nil {
		return nil, fmt.Errorf("kubernetes client config: %w", err)
	}
	return cfg, nil
}

// New returns a Source that talks to the API server of cfg and calls onModel
// with every new model. onModel is called from one goroutine at a time and
// should return quickly. log may be nil.
func New(cfg *rest.Config, onModel func(routes.Model), log *slog.Logger) (*Source, error) {
	return NewWithOptions(cfg, onModel, log, Options{})
}

// NewWithOptions is New with options.
func NewWithOptions(cfg *rest.Config, onModel func(routes.Model), log *slog.Logger, opts Options) (*Source, error) {
	if cfg == nil {
		return nil, errors.New("kube: nil rest config")
	}
	cfg = rest.CopyConfig(cfg)
	if cfg.UserAgent == "" {
		cfg.UserAgent = "meshlessd"
	}
	// Informers need few requests, but the four lists after a reconnect
	// should not queue behind client-side rate limiting.
	if cfg.QPS == 0 {
		cfg.QPS, cfg.Burst = 20, 40
	}
	s := newSource(onModel, log, opts)
	// Every request the informers make tells whether the API server is
	// reachable: the reflectors retry refused connections silently.
	cfg.Wrap(func(rt http.RoundTripper) http.RoundTripper { return &observer{rt: rt, s: s} })
	lws, err := restListWatchers(cfg)
	if err != nil {
		return nil, fmt.Errorf("kube: %w", err)
	}
	s.init(lws)
	return s, nil
}

func newSource(onModel func(routes.Model), log *slog.Logger, opts Options) *Source {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if opts.TunnelPort == 0 {
		opts.TunnelPort = DefaultTunnelPort
	}
	if opts.Debounce <= 0 {
		opts.Debounce = 50 * time.Millisecond
	}
	return &Source{
		onModel:  onModel,
		log:      log,
		opts:     opts,
		kick:     make(chan struct{}, 1),
		syncedCh: make(chan struct{}),
	}
}

func (s *Source) init(lws listWatchers) {
	informer := func(lw cache.ListerWatcher, obj runtime.Object) cache.SharedIndexInformer {
		return cache.NewSharedIndexInformer(lw, obj, s.opts.Resync, cache.Indexers{cache.NamespaceIndex: cache.MetaNamespaceIndexFunc})
	}
	svcInf := informer(lws.services, &corev1.Service{})
	esInf := informer(lws.slices, &discoveryv1.EndpointSlice{})
	podInf := informer(lws.pods, &corev1.Pod{})
	nodeInf := informer(lws.nodes, &corev1.Node{})
	s.services = listerscorev1.NewServiceLister(svcInf.GetIndexer())
	s.slices = listersdiscoveryv1.NewEndpointSliceLister(esInf.GetIndexer())
	s.pods = listerscorev1.NewPodLister(podInf.GetIndexer())
	s.nodes = listerscorev1.NewNodeLister(nodeInf.GetIndexer())

	// Pods and Nodes are the big objects; keep only what the model uses.
	must(podInf.SetTransform(trimPod))
	must(nodeInf.SetTransform(trimNode))

	all := cache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { s.trigger() },
		UpdateFunc: func(any, any) { s.trigger() },
		DeleteFunc: func(any) { s.trigger() },
	}
	// Pods change status all the time; only label and node changes matter
	// (addresses come from the EndpointSlices).
	pods := cache.ResourceEventHandlerFuncs{
		AddFunc: func(any) { s.trigger() },
		UpdateFunc: func(o, n any) {
			op, ok1 := o.(*corev1.Pod)
			np, ok2 := n.(*corev1.Pod)
			if !ok1 || !ok2 || op.Spec.NodeName != np.Spec.NodeName || !maps.Equal(op.Labels, np.Labels) {
				s.trigger()
			}
		},
		DeleteFunc: func(any) { s.trigger() },
	}
	if on := s.opts.OnPods; on != nil {
		if _, err := podInf.AddEventHandler(cache.ResourceEventHandlerFuncs{
			AddFunc:    func(any) { on() },
			UpdateFunc: func(any, any) { on() },
			DeleteFunc: func(any) { on() },
		}); err != nil {
			panic(err)
		}
	}
	for _, x := range []struct {
		inf cache.SharedIndexInformer
		h   cache.ResourceEventHandler
	}{
		{svcInf, all}, {esInf, all}, {podInf, pods}, {nodeInf, all},
	} {
		if _, err := x.inf.AddEventHandler(x.h); err != nil {
			panic(err) // only fails once the informer has stopped
		}
		must(x.inf.SetWatchErrorHandler(func(_ *cache.Reflector, err error) { s.setErr(err) }))
		s.informers = append(s.informers, x.inf)
	}
}

// observer notes the API server's reachability from every request:
// transport errors and 5xx responses set LastError, 2xx responses clear it.
type observer struct {
	rt http.RoundTripper
	s  *Source
}

func (o *observer) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := o.rt.RoundTrip(req)
	switch {
	case err != nil:
		if req.Context().Err() == nil { // not our own cancellation
			o.s.setErr(fmt.Errorf("%s %s: %w", req.Method, req.URL.Host, err))
		}
	case resp.StatusCode >= 500:
		o.s.setErr(fmt.Errorf("%s %s%s: %s", req.Method, req.URL.Host, req.URL.Path, resp.Status))
	case resp.StatusCode < 300:
		o.s.clearErr()
	}
	return resp, err
}

func must(err error) {
	if err != nil {
		panic(err) // only fails once the informer has started: a bug here
	}
}

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
	s.deliver(true)
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
			s.deliver(false)
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
// (always when first).
func (s *Source) deliver(first bool) {
	m, warn := s.build()
	s.mu.Lock()
	changed := first || !reflect.DeepEqual(m, s.last)
	if changed {
		s.last = m
		s.status.LastUpdate = time.Now()
		s.status.Updates++
		s.status.Nodes, s.status.Services, s.status.Endpoints = len(m.Nodes), len(m.Services), countEndpoints(m)
	}
	newWarn := !slices.Equal(warn, s.status.Warnings)
	s.status.Warnings = warn
	s.mu.Unlock()
	if newWarn {
		for _, w := range warn {
			s.log.Warn("kubernetes discovery: " + w)
		}
	}
	if changed && s.onModel != nil {
		s.onModel(m)
	}
}

func (s *Source) build() (routes.Model, []string) {
	svcs, err1 := s.services.List(labels.Everything())
	eps, err2 := s.slices.List(labels.Everything())
	nodes, err3 := s.nodes.List(labels.Everything())
	if err := errors.Join(err1, err2, err3); err != nil {
		// Listers over an indexer do not fail; keep going with what we have.
		s.log.Error("kubernetes discovery: list from cache", "err", err)
	}
	return Translate(Objects{
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
	}, s.opts.TunnelPort)
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
	st := s.status
	st.Synced = s.synced.Load()
	st.Warnings = slices.Clone(st.Warnings)
	if s.err != nil {
		st.LastError, st.LastErrorTime = s.err.Error(), s.errAt
	}
	return st
}

func (s *Source) summary() string {
	st := s.Status()
	return fmt.Sprintf("%d nodes, %d services, %d endpoints", st.Nodes, st.Services, st.Endpoints)
}

func countEndpoints(m routes.Model) int {
	n := 0
	for _, s := range m.Services {
		n += len(s.Endpoints)
	}
	return n
}

// trimPod keeps what the model and the enrollment of running pods use of a
// Pod: identity, labels, the meshless.io/ annotations, node, hostNetwork,
// phase and addresses.
func trimPod(obj any) (any, error) {
	p, ok := obj.(*corev1.Pod)
	if !ok {
		return obj, nil // a DeletedFinalStateUnknown tombstone
	}
	meta := metav1ObjectMeta(p.ObjectMeta)
	meta.DeletionTimestamp = p.DeletionTimestamp // terminating pods are not enrolled
	for k, v := range p.Annotations {
		if strings.HasPrefix(k, "meshless.io/") {
			if meta.Annotations == nil {
				meta.Annotations = map[string]string{}
			}
			meta.Annotations[k] = v
		}
	}
	return &corev1.Pod{
		TypeMeta:   p.TypeMeta,
		ObjectMeta: meta,
		Spec:       corev1.PodSpec{NodeName: p.Spec.NodeName, HostNetwork: p.Spec.HostNetwork},
		Status:     corev1.PodStatus{Phase: p.Status.Phase, PodIP: p.Status.PodIP, PodIPs: p.Status.PodIPs},
	}, nil
}

// trimNode keeps what the model uses of a Node: identity, pod CIDRs,
// addresses.
func trimNode(obj any) (any, error) {
	n, ok := obj.(*corev1.Node)
	if !ok {
		return obj, nil
	}
	return &corev1.Node{
		TypeMeta:   n.TypeMeta,
		ObjectMeta: metav1ObjectMeta(n.ObjectMeta),
		Spec:       corev1.NodeSpec{PodCIDR: n.Spec.PodCIDR, PodCIDRs: n.Spec.PodCIDRs},
		Status:     corev1.NodeStatus{Addresses: n.Status.Addresses},
	}, nil
}

func metav1ObjectMeta(m metav1.ObjectMeta) metav1.ObjectMeta {
	return metav1.ObjectMeta{
		Name:            m.Name,
		Namespace:       m.Namespace,
		UID:             m.UID,
		ResourceVersion: m.ResourceVersion,
		Labels:          m.Labels,
	}
}
