// Package kube is the Kubernetes discovery source of the routing table: it
// watches Services, EndpointSlices (discovery.k8s.io/v1), Pods, Nodes and
// Meshlets (ext.burningxflame.github.com/v1) with client-go informers and
// hands a complete routes.Model to a callback after every change: routes,
// and the workloads and Meshlets the daemon's checks use.
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
// Meshlets: the CRD (install/kubernetes/meshlet-crd.yaml) may be installed
// after the daemons or not at all; until it is there the model has no
// Meshlets and the source looks for it every 10-20 s. A Meshlet that fails
// validation (what the CRD's schema could not reject) is left out of the
// model, logged once with what to fix, and its status gets the condition
// Accepted=False with the same message; valid ones get Accepted=True. See
// Translate for the rest of the rules.
//
// RBAC: get, list and watch on services, pods and nodes ("" group),
// endpointslices (discovery.k8s.io) and meshlets
// (ext.burningxflame.github.com); update on meshlets/status. Nothing else.
// A missing CRD means no Meshlets, but a forbidden list of meshlets (an
// old ClusterRole) keeps the source from syncing, as any other resource
// would: it cannot tell which policy holds, so it delivers none rather
// than a model without the cluster's Meshlets. Without update on the
// status the source only logs rejected Meshlets.
package kube

import (
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/runtime"
	listerscorev1 "k8s.io/client-go/listers/core/v1"
	listersdiscoveryv1 "k8s.io/client-go/listers/discovery/v1"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/meshless/meshless/daemon/routes"
	"github.com/meshless/meshless/internal/wellknown"
)

// Options tune a Source; the zero value gives the defaults.
type Options struct {
	// TunnelPort is the node daemons' tunnel port; wellknown.TunnelPort when 0.
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
	// StatusDelay is the most a Meshlet status write waits, at random, so
	// that of all the daemons usually one writes; 2 s when 0.
	StatusDelay time.Duration
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
	// Nodes, Services, Endpoints, Workloads and Meshlets count the last
	// model's items.
	Nodes     int `json:"nodes"`
	Services  int `json:"services"`
	Endpoints int `json:"endpoints"`
	Workloads int `json:"workloads"`
	Meshlets  int `json:"meshlets"`
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
	meshlets  cache.Indexer // nil when Meshlets are not watched
	status    *statusWriter

	kick     chan struct{}
	syncedCh chan struct{}
	synced   atomic.Bool
	running  atomic.Bool
	hasErr   atomic.Bool

	mu    sync.Mutex
	st    Status
	last  routes.Model
	errAt time.Time
	err   error
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
		opts.TunnelPort = wellknown.TunnelPort
	}
	if opts.Debounce <= 0 {
		opts.Debounce = 50 * time.Millisecond
	}
	if opts.StatusDelay <= 0 {
		opts.StatusDelay = 2 * time.Second
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
	pods := cache.ResourceEventHandlerFuncs{
		AddFunc: func(any) { s.trigger() },
		UpdateFunc: func(o, n any) {
			op, ok1 := o.(*corev1.Pod)
			np, ok2 := n.(*corev1.Pod)
			if !ok1 || !ok2 || podChanged(op, np) {
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
	handled := []struct {
		inf cache.SharedIndexInformer
		h   cache.ResourceEventHandler
	}{
		{svcInf, all}, {esInf, all}, {podInf, pods}, {nodeInf, all},
	}
	if lws.meshlets != nil {
		mInf := informer(lws.meshlets, &MeshletObject{})
		must(mInf.SetTransform(trimMeshlet))
		s.meshlets = mInf.GetIndexer()
		if opt, ok := lws.meshlets.(*optionalResource); ok {
			opt.haveItems = func() bool { return len(mInf.GetStore().ListKeys()) > 0 }
		}
		s.status = &statusWriter{update: lws.updateStatus, get: s.meshlet, log: s.log, delay: s.opts.StatusDelay}
		handled = append(handled, struct {
			inf cache.SharedIndexInformer
			h   cache.ResourceEventHandler
		}{mInf, all})
	}
	for _, x := range handled {
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
