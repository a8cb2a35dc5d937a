// Package metrics defines the daemon's Prometheus metrics, named as fixed in
// DESIGN.md, on a registry of their own (not the process-global default), so
// tests and several daemons in one process never collide.
//
//	m := metrics.New()
//	m.Connections.WithLabelValues(metrics.Outbound, metrics.PathPassthrough).Inc()
//	http.Handle("/metrics", promhttp.HandlerFor(m.Registry, promhttp.HandlerOpts{}))
package metrics

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// Label values of "direction".
const (
	// Outbound is traffic a pod sends (its redirected connect()).
	Outbound = "outbound"
	// Inbound is traffic arriving at a pod.
	Inbound = "inbound"
)

// Label values of "path" in meshless_connections_total.
const (
	// PathLocal is a same-node pod reached through a socket inside its netns.
	PathLocal = "local"
	// PathUDS is a same-node pod reached through its unix socket.
	PathUDS = "uds"
	// PathRemote is a pod on another node, through the tunnel.
	PathRemote = "remote"
	// PathPassthrough is a destination outside the mesh, dialled as is.
	PathPassthrough = "passthrough"
)

// Label values of "result" in meshless_race_total.
const (
	RaceWon    = "won"
	RaceLost   = "lost"
	RaceFailed = "failed"
)

// Metrics holds every metric the daemon exports.
type Metrics struct {
	// Registry is what /metrics serves.
	Registry *prometheus.Registry
	// Connections counts forwarded connections by direction and path.
	Connections *prometheus.CounterVec
	// Failures counts connections that could not be forwarded, by reason
	// (short words such as "origdst", "dial", "loop").
	Failures *prometheus.CounterVec
	// Race counts racing dial attempts by result (won, lost, failed).
	Race *prometheus.CounterVec
	// Bytes counts payload bytes forwarded, by the direction of the
	// connection they belong to (both halves of it).
	Bytes *prometheus.CounterVec
	// Pods is the number of registered pods.
	Pods prometheus.Gauge
	// Listeners is the number of listeners open inside pod netns.
	Listeners prometheus.Gauge
}

// New creates the metrics on a fresh registry, together with the Go runtime
// and process collectors. The label combinations fixed by the design are
// initialised at zero so dashboards and tests see them before first use.
func New() *Metrics {
	m := &Metrics{
		Registry: prometheus.NewRegistry(),
		Connections: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meshless_connections_total",
			Help: "Connections forwarded, by direction and path (local, uds, remote, passthrough).",
		}, []string{"direction", "path"}),
		Failures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meshless_connection_failures_total",
			Help: "Connections that could not be forwarded, by reason.",
		}, []string{"reason"}),
		Race: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meshless_race_total",
			Help: "Racing dial attempts, by result (won, lost, failed).",
		}, []string{"result"}),
		Bytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meshless_bytes_total",
			Help: "Bytes forwarded in both halves of connections, by connection direction.",
		}, []string{"direction"}),
		Pods: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "meshless_pods",
			Help: "Pods registered with this daemon.",
		}),
		Listeners: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "meshless_listeners",
			Help: "Listeners open inside pod network namespaces.",
		}),
	}
	m.Registry.MustRegister(m.Connections, m.Failures, m.Race, m.Bytes, m.Pods, m.Listeners,
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	for _, d := range []string{Outbound, Inbound} {
		m.Bytes.WithLabelValues(d)
		for _, p := range []string{PathLocal, PathUDS, PathRemote, PathPassthrough} {
			m.Connections.WithLabelValues(d, p)
		}
	}
	for _, r := range []string{RaceWon, RaceLost, RaceFailed} {
		m.Race.WithLabelValues(r)
	}
	return m
}
