// Package meshlet holds the Meshlet API (the seed's resource, as its users
// write it) and the workloads it applies to: the data the daemon's access
// control, canary, maxConn and identity checks are fed with.
//
//	if errs := m.Validate(); len(errs) > 0 { ... }     // every problem, with its path
//	x, err := meshlet.NewIndex(workloads, meshlets)    // routes.Build does this
//	w := x.Workload(srcIP)                             // the pod behind an address
//	from := x.MeshletOf(w)                             // the Meshlet it joined, or nil
//	to, svc := x.Service("shop", "web")                // who serves Service shop/web
//	allowed := from != nil && from.Uses(to.Namespace, to.Name, svc.Name)
//	pods := x.Servers(to)                              // its server pods, by version
//
// # The resource
//
// apiVersion ext.burningxflame.github.com/v1, kind Meshlet, namespaced,
// plural meshlets (install/kubernetes/meshlet-crd.yaml). Standalone, the
// registry file lists the same specs under meshlets: as {namespace, name,
// spec}, which is the Meshlet type here; daemon/kube wraps it in the
// Kubernetes object (metadata, status) so that this package, and with it
// the routing table, stays free of the Kubernetes libraries.
//
//	spec:
//	  client:                    # the services this Meshlet's pods use
//	    - {namespace: shop, meshlet: db, service: pg}
//	  server:
//	    selector: {role: api}    # which of its pods serve (default: all)
//	    services:
//	      - {name: web, maxConn: 100, idleTimeout: 5m}
//	    canary:
//	      - {version: v1, weight: 90}
//	      - {version: v2, weight: 10}
//
// # Membership: who belongs to a Meshlet
//
// A pod joins a Meshlet with the label meshless/meshlet: <name>; it joins
// the Meshlet of that name in its own namespace, so a pod belongs to at
// most one Meshlet. Membership is the pod's client side: its connections
// to services that Meshlets govern are checked against its Meshlet's
// spec.client.
//
// The server side narrows membership, it never extends it: the pods that
// serve a Meshlet's server.services are its members whose labels contain
// every key and value of server.selector (matchLabels semantics; an empty
// or missing selector picks every member). A pod that matches the
// selector but did not join serves nothing. So each pod serves at most one
// Meshlet and its maxConn, idleTimeout and canary weight are never
// ambiguous. A pod's version is its label version.
//
// A server service named web of a Meshlet in namespace shop is the one
// reached through the Kubernetes Service shop/web (and natively at
// /meshlet/server/web), so two Meshlets of one namespace cannot declare
// the same server service name: Select keeps the first and rejects the
// other.
//
// # Validation
//
// Validate reports every problem with its field path; see its doc for the
// rules. The CRD's schema rejects all of them that a schema can express;
// what it cannot (a duration too large for Go, a name clash between two
// Meshlets) is left to Validate and Select, and the daemon leaves such a
// Meshlet out. One rule no static check can make: canary weights on
// versions that no pod has. Those versions get no traffic (the share is
// weight ÷ sum over the versions that have a ready instance); the daemon
// checks it when it picks a version.
package meshlet

import "slices"

// The resource's identity, as DESIGN.md fixes it.
const (
	// Group is the API group of the Meshlet resource.
	Group = "ext.burningxflame.github.com"
	// Version is the API version of the Meshlet resource.
	Version = "v1"
	// APIVersion is "group/version", the objects' apiVersion.
	APIVersion = Group + "/" + Version
	// Kind is the objects' kind.
	Kind = "Meshlet"
	// ListKind is the kind of a list of Meshlets.
	ListKind = "MeshletList"
	// Resource is the plural resource name, as in URLs and RBAC rules.
	Resource = "meshlets"
	// Singular is the singular resource name.
	Singular = "meshlet"
)

// Pod labels with a meaning.
const (
	// LabelMeshlet is the label by which a pod joins the Meshlet of that
	// name in its namespace.
	LabelMeshlet = "meshless/meshlet"
	// LabelVersion is the label that gives a pod's version, for canary
	// weights.
	LabelVersion = "version"
)

// Meshlet is one Meshlet: its identity and its spec. It is also the
// registry file's meshlets: entry.
type Meshlet struct {
	// Namespace is the Meshlet's namespace; its pods are in it.
	Namespace string `json:"namespace" yaml:"namespace"`
	// Name is the Meshlet's name, the value of its pods' meshless/meshlet
	// label.
	Name string `json:"name" yaml:"name"`
	// Spec is what the Meshlet declares.
	Spec Spec `json:"spec" yaml:"spec"`
}

// Spec is what a Meshlet declares: the services its pods use and the ones
// they serve.
type Spec struct {
	// Client lists the services this Meshlet's pods use; a connection to
	// a service that a Meshlet governs is allowed only from pods of a
	// Meshlet that lists it here.
	Client []ClientRef `json:"client,omitempty" yaml:"client,omitempty"`
	// Server describes what the Meshlet's pods serve.
	Server Server `json:"server,omitzero" yaml:"server,omitempty"`
}

// ClientRef names one service a Meshlet uses.
type ClientRef struct {
	// Namespace is the namespace of the Meshlet that serves the service;
	// the using Meshlet's own namespace when empty.
	Namespace string `json:"namespace,omitempty" yaml:"namespace,omitempty"`
	// Meshlet is the name of the Meshlet that serves the service.
	Meshlet string `json:"meshlet" yaml:"meshlet"`
	// Service is the name of one of that Meshlet's server.services.
	Service string `json:"service" yaml:"service"`
}

// Server is the server side of a Meshlet.
type Server struct {
	// Selector picks, by labels, which of the Meshlet's member pods serve
	// its services; empty picks them all. It never adds pods that did not
	// join the Meshlet.
	Selector map[string]string `json:"selector,omitempty" yaml:"selector,omitempty"`
	// Services are the services the server pods serve; names are unique.
	Services []Service `json:"services,omitempty" yaml:"services,omitempty"`
	// Canary gives the share of new connections per pod version; empty
	// means no weighting. Versions are unique and weights add up to 100.
	Canary []Canary `json:"canary,omitempty" yaml:"canary,omitempty"`
}

// Service is one service of a Meshlet's server side.
type Service struct {
	// Name is the service's name: the Kubernetes Service of that name in
	// the Meshlet's namespace, and /meshlet/server/<name> in its pods.
	Name string `json:"name" yaml:"name"`
	// MaxConn is the most concurrent connections per server pod; 0 (the
	// default) is no limit.
	MaxConn int `json:"maxConn,omitempty" yaml:"maxConn,omitempty"`
	// IdleTimeout closes a connection after no byte moved either way for
	// that long; Go duration syntax ("30s", "5m", "1h30m"); empty or "0"
	// (the default) is none. Parsed by Validate and IdleTimeoutDuration.
	IdleTimeout string `json:"idleTimeout,omitempty" yaml:"idleTimeout,omitempty"`
}

// Canary is the weight of one pod version.
type Canary struct {
	// Version is a value of the pods' version label.
	Version string `json:"version" yaml:"version"`
	// Weight is the version's share of new connections, in percent of the
	// sum over the versions that have a ready instance; 0 gets none.
	Weight int `json:"weight" yaml:"weight"`
}

// Key returns "namespace/name".
func (m *Meshlet) Key() string { return m.Namespace + "/" + m.Name }

// Uses reports whether m's spec.client lists service of the Meshlet
// namespace/meshlet; a ClientRef without namespace means m's own.
func (m *Meshlet) Uses(namespace, meshlet, service string) bool {
	return slices.ContainsFunc(m.Spec.Client, func(c ClientRef) bool {
		ns := c.Namespace
		if ns == "" {
			ns = m.Namespace
		}
		return ns == namespace && c.Meshlet == meshlet && c.Service == service
	})
}

// Service returns m's server service called name, or nil.
func (m *Meshlet) Service(name string) *Service {
	for i := range m.Spec.Server.Services {
		if m.Spec.Server.Services[i].Name == name {
			return &m.Spec.Server.Services[i]
		}
	}
	return nil
}

// Weight returns the canary weight of version and whether m gives
// weights at all. Without weights every version is equal; with them, a
// version they do not name gets 0.
func (m *Meshlet) Weight(version string) (weight int, weighted bool) {
	c := m.Spec.Server.Canary
	if len(c) == 0 {
		return 0, false
	}
	if i := slices.IndexFunc(c, func(c Canary) bool { return c.Version == version }); i >= 0 {
		return c[i].Weight, true
	}
	return 0, true
}

// HasMember reports whether w joined m: same namespace and the label
// meshless/meshlet naming m.
func (m *Meshlet) HasMember(w *Workload) bool {
	return w.Namespace == m.Namespace && w.Labels[LabelMeshlet] == m.Name && m.Name != ""
}

// Serves reports whether w is one of m's server pods: a member whose
// labels contain every pair of m's server selector.
func (m *Meshlet) Serves(w *Workload) bool {
	if !m.HasMember(w) {
		return false
	}
	for k, v := range m.Spec.Server.Selector {
		if got, ok := w.Labels[k]; !ok || got != v {
			return false
		}
	}
	return true
}
