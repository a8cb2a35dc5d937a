package app

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/meshless/meshless/daemon/cniapi"
	"github.com/meshless/meshless/daemon/kube"
	"github.com/meshless/meshless/daemon/registry"
	"github.com/meshless/meshless/daemon/routes"
)

// discovery feeds the routing table from the registry file or the
// Kubernetes API and remembers
// what status reports: when the table changed and the last error.
type discovery struct {
	table  *routes.Table
	source string
	log    *slog.Logger

	mu      sync.Mutex
	updated time.Time
	err     string
	errAt   time.Time
	// kube, when set, reports API server errors the table never sees.
	kube *kube.Source
	// onPods, if set before watchKube, is called on every pod change once
	// the Kubernetes caches synced (kube.Options.OnPods).
	onPods func()
}

// podsOnNode returns node's pods from the Kubernetes source, false until
// its caches synced.
func (d *discovery) podsOnNode(node string) func() ([]*corev1.Pod, bool) {
	return func() ([]*corev1.Pod, bool) {
		d.mu.Lock()
		src := d.kube
		d.mu.Unlock()
		if src == nil || !src.HasSynced() {
			return nil, false
		}
		return src.PodsOnNode(node), true
	}
}

// watchRegistry polls path until ctx is done; first is closed after the
// first poll, valid or not, so the daemon starts with the file's routes.
func (d *discovery) watchRegistry(ctx context.Context, path string, first chan<- struct{}) error {
	var once sync.Once
	done := func() { once.Do(func() { close(first) }) }
	defer done()
	return registry.Watch(ctx, path, func(r *registry.Registry) {
		defer done()
		if err := d.table.Update(r.ToModel()); err != nil {
			d.fail(fmt.Errorf("registry %s: %w", path, err))
			return
		}
		d.mu.Lock()
		d.updated, d.err, d.errAt = time.Now(), "", time.Time{}
		d.mu.Unlock()
		m := r.ToModel()
		d.log.Info("routes updated", "registry", path, "nodes", len(m.Nodes), "services", len(m.Services))
	}, func(err error) {
		defer done()
		d.fail(fmt.Errorf("registry %s: %w", path, err))
	})
}

func (d *discovery) fail(err error) {
	d.mu.Lock()
	d.err, d.errAt = err.Error(), time.Now()
	d.mu.Unlock()
	d.log.Error("routing table not updated, keeping the last good one", "err", err)
}

// status builds the status answer from the current snapshot.
func (d *discovery) status(base cniapi.DaemonStatus) *cniapi.DaemonStatus {
	st := base
	st.Discovery = d.source
	d.mu.Lock()
	st.RoutesUpdated, st.DiscoveryError, st.DiscoveryErrorAt = d.updated, d.err, d.errAt
	if d.kube != nil && st.DiscoveryError == "" {
		if ks := d.kube.Status(); ks.LastError != "" {
			st.DiscoveryError, st.DiscoveryErrorAt = "kubernetes: "+ks.LastError, ks.LastErrorTime
		}
	}
	d.mu.Unlock()
	snap := d.table.Snapshot()
	m := snap.Model()
	st.Nodes = []cniapi.NodeRoute{}
	for _, n := range m.Nodes {
		nr := cniapi.NodeRoute{Name: n.Name, Tunnel: n.Tunnel.String(), Self: n.Name == snap.Self(), PodCIDRs: []string{}}
		for _, p := range n.PodCIDRs {
			nr.PodCIDRs = append(nr.PodCIDRs, p.String())
		}
		st.Nodes = append(st.Nodes, nr)
	}
	st.Services = []cniapi.ServiceRoute{}
	for _, s := range m.Services {
		sr := cniapi.ServiceRoute{Name: s.Namespace + "/" + s.Name, VIPs: []string{}, Ports: []string{}, Endpoints: []string{}}
		for _, v := range s.VIPs {
			sr.VIPs = append(sr.VIPs, v.String())
		}
		for _, p := range s.Ports {
			sr.Ports = append(sr.Ports, fmt.Sprintf("%d->%d", p.Port, p.TargetPort))
		}
		for _, e := range s.Endpoints {
			sr.Endpoints = append(sr.Endpoints, e.IP.String()+"@"+e.Node)
		}
		st.Services = append(st.Services, sr)
	}
	slices.SortFunc(st.Services, func(a, b cniapi.ServiceRoute) int {
		if a.Name < b.Name {
			return -1
		}
		if a.Name > b.Name {
			return 1
		}
		return 0
	})
	return &st
}

// withStatus serves GET /v1/status next to the CNI API routes of h.
func withStatus(h http.Handler, status func() *cniapi.DaemonStatus) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/status", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(status())
	})
	mux.Handle("/", h)
	return mux
}

// kubeSyncWait bounds how long a starting daemon waits for the first
// Kubernetes model before it reopens the pods' listeners: pods already
// running must not stay unreachable because the API server is slow; until
// the model arrives their connections are passthrough.
const kubeSyncWait = 15 * time.Second

// watchKube runs the Kubernetes source until ctx is done; first is closed
// once the first model is in the table or kubeSyncWait passed.
func (d *discovery) watchKube(ctx context.Context, kubeconfig string, first chan<- struct{}) error {
	var once sync.Once
	done := func() { once.Do(func() { close(first) }) }
	defer done()
	cfg, err := kube.RESTConfig(kubeconfig)
	if err != nil {
		return fmt.Errorf("kubernetes discovery: %w (give --registry FILE, --kubeconfig FILE, or run in a cluster)", err)
	}
	src, err := kube.NewWithOptions(cfg, func(m routes.Model) {
		if err := d.table.Update(m); err != nil {
			d.fail(fmt.Errorf("kubernetes: %w", err))
			return
		}
		d.mu.Lock()
		d.updated, d.err, d.errAt = time.Now(), "", time.Time{}
		d.mu.Unlock()
		d.log.Info("routes updated", "source", "kubernetes", "nodes", len(m.Nodes), "services", len(m.Services))
	}, d.log, kube.Options{OnPods: d.onPods})
	if err != nil {
		return fmt.Errorf("kubernetes discovery: %w", err)
	}
	d.mu.Lock()
	d.kube = src
	d.mu.Unlock()
	go func() {
		select {
		case <-src.Synced():
		case <-time.After(kubeSyncWait):
			d.log.Warn("kubernetes discovery not synced yet; starting with passthrough routes", "waited", kubeSyncWait)
		case <-ctx.Done():
		}
		done()
	}()
	return src.Run(ctx)
}
