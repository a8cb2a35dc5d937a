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

	"github.com/meshless/meshless/daemon/race"
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

// Label values of "result" in meshless_race_total: race.Result's values.
var raceResults = []race.Result{race.Won, race.Lost, race.Failed}

// Label values of "reason" in meshless_connection_failures_total: why a
// connection was not forwarded.
const (
	// ReasonOrigDst: the original destination could not be read.
	ReasonOrigDst = "origdst"
	// ReasonLoop: the connection was addressed to the daemon's listener.
	ReasonLoop = "loop"
	// ReasonNoEndpoints: the service has no endpoints.
	ReasonNoEndpoints = "no_endpoints"
	// ReasonDial: the destination (every candidate) could not be reached.
	ReasonDial = "dial"
	// ReasonInboundPolicy: the strict inbound policy refused the client.
	ReasonInboundPolicy = "inbound_policy"
	// ReasonConnType: a connection of an unexpected kind (internal error).
	ReasonConnType = "conn_type"
	// ReasonPeerSource: a tunnel's source address is not a pod of the
	// node that its certificate authenticated.
	ReasonPeerSource = "peer_source"
	// ReasonDenied: the Meshlets' access control refused the connection.
	ReasonDenied = "denied"
	// ReasonRevoked: a live connection closed because a Meshlet change
	// no longer allows it.
	ReasonRevoked = "revoked"
	// ReasonMaxConn: every instance of the service is at its maxConn.
	ReasonMaxConn = "max_conn"
	// ReasonUnknownService: a native API request names no service a
	// Meshlet serves.
	ReasonUnknownService = "unknown_service"
	// ReasonNativeRequest: a native API request was malformed, too long,
	// too slow or of another version.
	ReasonNativeRequest = "native_request"
)

// Reasons of the tunnel's server side: a tunnel connection dropped before
// its bytes were relayed.
const (
	// ReasonBadMagic: the first bytes were not the tunnel's magic.
	ReasonBadMagic = "bad_magic"
	// ReasonBadVersion: a version this server does not speak.
	ReasonBadVersion = "bad_version"
	// ReasonMalformed: the header was malformed.
	ReasonMalformed = "malformed_header"
	// ReasonTooLong: the announced header length exceeded the maximum.
	ReasonTooLong = "header_too_long"
	// ReasonHeaderTimeout: the header did not arrive in time.
	ReasonHeaderTimeout = "header_timeout"
	// ReasonHeaderRead: the connection failed or closed before a whole
	// header.
	ReasonHeaderRead = "header_read"
	// ReasonRefused: the application refused the connection.
	ReasonRefused = "dial_refused"
	// ReasonUnreachable: the application was unreachable or timed out.
	ReasonUnreachable = "dial_unreachable"
	// ReasonForbidden: the destination is not a pod of this node.
	ReasonForbidden = "dial_forbidden"
	// ReasonDialFailed: any other failure to reach the application.
	ReasonDialFailed = "dial_failed"
	// ReasonReply: the tunnel's OK reply could not be written.
	ReasonReply = "reply_write"
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
	// Audited counts connections that --access-policy audit let through
	// and enforce would have refused, by reason.
	Audited *prometheus.CounterVec
	// Handoffs counts native API connections handed to the client
	// (SCM_RIGHTS): counted in Connections too, their bytes not in Bytes.
	Handoffs prometheus.Counter
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
		Audited: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meshless_policy_audit_total",
			Help: "Connections the audit access policy let through that enforce would have refused, by reason.",
		}, []string{"reason"}),
		Handoffs: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "meshless_native_handoffs_total",
			Help: "Native API connections handed to the client's app (zero-copy: their bytes are not counted).",
		}),
		Pods: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "meshless_pods",
			Help: "Pods registered with this daemon.",
		}),
		Listeners: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "meshless_listeners",
			Help: "Listeners open inside pod network namespaces.",
		}),
	}
	m.Registry.MustRegister(m.Connections, m.Failures, m.Race, m.Bytes, m.Audited, m.Handoffs, m.Pods, m.Listeners,
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	for _, d := range []string{Outbound, Inbound} {
		m.Bytes.WithLabelValues(d)
		for _, p := range []string{PathLocal, PathUDS, PathRemote, PathPassthrough} {
			m.Connections.WithLabelValues(d, p)
		}
	}
	for _, r := range []string{ReasonDenied, ReasonMaxConn} {
		m.Failures.WithLabelValues(r)
	}
	for _, r := range raceResults {
		m.Race.WithLabelValues(string(r))
	}
	return m
}
