// Package discovery keeps the daemon's routing table current from one
// source, the YAML registry file (standalone) or the Kubernetes API, and
// remembers what status reports about it: where the table comes from, when
// it last changed, and the last problem while the table kept its last good
// content.
//
//	w := discovery.New(discovery.Config{Table: table, Registry: "/etc/meshless/registry.yaml"})
//	go w.Run(ctx)    // returns the source's fatal error, nil when ctx ends
//	<-w.Ready()      // the first model is in the table (or the source gave up waiting)
//	st := w.Status() // for GET /v1/status
package discovery

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/meshless/meshless/daemon/kube"
	"github.com/meshless/meshless/daemon/registry"
	"github.com/meshless/meshless/daemon/routes"
)

// KubeSyncWait bounds how long a starting daemon waits for the first
// Kubernetes model before it reopens the pods' listeners: pods already
// running must not stay unreachable because the API server is slow; until
// the model arrives their connections are passthrough.
const KubeSyncWait = 15 * time.Second

// Config is what a Watcher needs.
type Config struct {
	// Table receives the models. Required.
	Table *routes.Table
	// Registry is the YAML registry file; when empty the source is the
	// Kubernetes API through Kubeconfig, or the in-cluster configuration
	// when that is empty too.
	Registry   string
	Kubeconfig string
	// TunnelPort is the port of the node daemons' tunnels, which the
	// Kubernetes API does not know (the registry file gives it per node).
	TunnelPort uint16
	// OnPods, if set, is called on every pod change once the Kubernetes
	// caches synced (kube.Options.OnPods); it must return at once.
	OnPods func()
	// OnUpdate, if set, is called after each new model is in the table;
	// it must return soon.
	OnUpdate func()
	// Logger defaults to slog.Default().
	Logger *slog.Logger
}

// Status is what the Watcher reports.
type Status struct {
	// Source names where the table comes from, e.g.
	// "registry /etc/meshless/registry.yaml".
	Source string
	// Updated is when the table was last replaced; zero before the first
	// valid model.
	Updated time.Time
	// Err is the last problem (an invalid registry file, an API server
	// that does not answer) while the table kept its last good content;
	// empty once a valid model arrived.
	Err string
	// ErrAt is when Err was seen.
	ErrAt time.Time
}

// Watcher runs the source. Its methods are safe for concurrent use.
type Watcher struct {
	cfg    Config
	log    *slog.Logger
	source string
	ready  chan struct{}
	once   sync.Once

	mu      sync.Mutex
	updated time.Time
	err     string
	errAt   time.Time
	kube    *kube.Source
}

// New returns a Watcher for cfg; Run starts it.
func New(cfg Config) *Watcher {
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	source := "kubernetes (in-cluster)"
	switch {
	case cfg.Registry != "":
		source = "registry " + cfg.Registry
	case cfg.Kubeconfig != "":
		source = "kubernetes (" + cfg.Kubeconfig + ")"
	}
	return &Watcher{cfg: cfg, log: log, source: source, ready: make(chan struct{})}
}

// Ready is closed once the first model is in the table, or the source
// gave up waiting for one (see KubeSyncWait).
func (w *Watcher) Ready() <-chan struct{} { return w.ready }

func (w *Watcher) markReady() { w.once.Do(func() { close(w.ready) }) }

// Run runs the source until ctx is done and returns nil then, or the
// error that stopped it (a Kubernetes configuration that cannot work). A
// source that fails this way never becomes Ready: wait for Ready and for
// Run's error together.
func (w *Watcher) Run(ctx context.Context) error {
	if w.cfg.Registry != "" {
		return w.runRegistry(ctx)
	}
	return w.runKube(ctx)
}

// Status returns the current status.
func (w *Watcher) Status() Status {
	w.mu.Lock()
	st := Status{Source: w.source, Updated: w.updated, Err: w.err, ErrAt: w.errAt}
	src := w.kube
	w.mu.Unlock()
	if src != nil && st.Err == "" {
		if ks := src.Status(); ks.LastError != "" {
			st.Err, st.ErrAt = "kubernetes: "+ks.LastError, ks.LastErrorTime
		}
	}
	return st
}

// PodsOnNode returns node's pods from the Kubernetes source, and false
// until its caches synced (always false with a registry file).
func (w *Watcher) PodsOnNode(node string) ([]*corev1.Pod, bool) {
	w.mu.Lock()
	src := w.kube
	w.mu.Unlock()
	if src == nil || !src.HasSynced() {
		return nil, false
	}
	return src.PodsOnNode(node), true
}

// update puts m into the table, or keeps the last good table and
// remembers why.
func (w *Watcher) update(m routes.Model, from string) {
	if err := w.cfg.Table.Update(m); err != nil {
		w.fail(fmt.Errorf("%s: %w", from, err))
		return
	}
	w.mu.Lock()
	w.updated, w.err, w.errAt = time.Now(), "", time.Time{}
	w.mu.Unlock()
	w.log.Info("routes updated", "source", from, "nodes", len(m.Nodes), "services", len(m.Services))
	if w.cfg.OnUpdate != nil {
		w.cfg.OnUpdate()
	}
}

func (w *Watcher) fail(err error) {
	w.mu.Lock()
	w.err, w.errAt = err.Error(), time.Now()
	w.mu.Unlock()
	w.log.Error("routing table not updated, keeping the last good one", "err", err)
}

// runRegistry polls the file until ctx is done; the daemon is ready after
// the first poll, valid or not, so it starts with the file's routes.
func (w *Watcher) runRegistry(ctx context.Context) error {
	from := "registry " + w.cfg.Registry
	return registry.Watch(ctx, w.cfg.Registry, func(r *registry.Registry) {
		defer w.markReady()
		w.update(r.ToModel(), from)
	}, func(err error) {
		defer w.markReady()
		w.fail(fmt.Errorf("%s: %w", from, err))
	})
}

// runKube runs the Kubernetes source until ctx is done; the daemon is
// ready once the first model is in the table or KubeSyncWait passed.
func (w *Watcher) runKube(ctx context.Context) error {
	cfg, err := kube.RESTConfig(w.cfg.Kubeconfig)
	if err != nil {
		return fmt.Errorf("kubernetes discovery: %w (give --registry FILE, --kubeconfig FILE, or run in a cluster)", err)
	}
	src, err := kube.NewWithOptions(cfg, func(m routes.Model) { w.update(m, "kubernetes") }, w.log,
		kube.Options{OnPods: w.cfg.OnPods, TunnelPort: w.cfg.TunnelPort})
	if err != nil {
		return fmt.Errorf("kubernetes discovery: %w", err)
	}
	w.mu.Lock()
	w.kube = src
	w.mu.Unlock()
	go func() {
		t := time.NewTimer(KubeSyncWait)
		defer t.Stop()
		select {
		case <-src.Synced():
		case <-t.C:
			w.log.Warn("kubernetes discovery not synced yet; starting with passthrough routes", "waited", KubeSyncWait)
		case <-ctx.Done():
		}
		w.markReady()
	}()
	if err := src.Run(ctx); err != nil && !errors.Is(err, context.Canceled) {
		return fmt.Errorf("kubernetes discovery: %w", err)
	}
	return nil
}
