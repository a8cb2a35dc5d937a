package meshlet

import (
	"fmt"
	"net/netip"
	"slices"
)

// DefaultServiceAccount is the service account of a pod that names none,
// as in Kubernetes.
const DefaultServiceAccount = "default"

// Workload is one pod as the checks see it: who it is, where it runs and
// its labels. Kubernetes discovery makes one per pod that has addresses
// and does not use the host's network; the registry file lists them under
// workloads: ({namespace, name, ip, node, serviceAccount, labels}).
type Workload struct {
	// Namespace and Name identify the pod.
	Namespace string `json:"namespace"`
	Name      string `json:"name"`
	// IPs are the pod's addresses (one per family), unmapped.
	IPs []netip.Addr `json:"ips"`
	// Node is the name of the node the pod runs on.
	Node string `json:"node"`
	// ServiceAccount is the pod's service account, its identity;
	// DefaultServiceAccount when the pod names none.
	ServiceAccount string `json:"serviceAccount"`
	// Labels are the pod's labels: meshless/meshlet, version and the
	// ones server selectors match.
	Labels map[string]string `json:"labels,omitempty"`
}

// Key returns "namespace/name".
func (w *Workload) Key() string { return w.Namespace + "/" + w.Name }

// MeshletName returns the name of the Meshlet w joined (its label
// meshless/meshlet), "" if none. The Meshlet is in w's namespace.
func (w *Workload) MeshletName() string { return w.Labels[LabelMeshlet] }

// Version returns w's version (its label version), "" if none.
func (w *Workload) Version() string { return w.Labels[LabelVersion] }

// Identity returns w's SPIFFE ID in trustDomain:
// spiffe://<trust-domain>/ns/<namespace>/sa/<serviceaccount>.
func (w *Workload) Identity(trustDomain string) string {
	sa := w.ServiceAccount
	if sa == "" {
		sa = DefaultServiceAccount
	}
	return "spiffe://" + trustDomain + "/ns/" + w.Namespace + "/sa/" + sa
}

// Index answers the checks' questions about workloads and Meshlets
// without scanning: by address, by name, by service, by membership. It is
// immutable; the zero value and nil answer nothing. Everything it returns
// is shared: callers must not modify it.
type Index struct {
	workloads []Workload
	meshlets  []Meshlet
	byIP      map[netip.Addr]*Workload
	byName    map[nsName]*Meshlet
	byService map[nsName]serviceRef
	servers   map[*Meshlet][]*Workload
}

// nsName keys the maps without building a string per lookup.
type nsName struct{ ns, name string }

type serviceRef struct {
	m   *Meshlet
	svc *Service
}

// NewIndex indexes ws and ms; it keeps them (callers must not modify them
// afterwards). It refuses what would make an answer ambiguous: a workload
// without name, an invalid address or one held by two workloads, two
// workloads or two Meshlets with the same namespace and name, two
// Meshlets of a namespace that serve the same service name. It does not
// Validate the Meshlets: sources do that (and Select resolves the clashes)
// before they hand them on.
func NewIndex(ws []Workload, ms []Meshlet) (*Index, error) {
	x := &Index{
		workloads: ws,
		meshlets:  ms,
		byIP:      make(map[netip.Addr]*Workload, len(ws)),
		byName:    make(map[nsName]*Meshlet, len(ms)),
		byService: map[nsName]serviceRef{},
		servers:   make(map[*Meshlet][]*Workload, len(ms)),
	}
	names := make(map[nsName]int, len(ws))
	for i := range x.workloads {
		w := &x.workloads[i]
		if w.Name == "" {
			return nil, fmt.Errorf("workloads[%d]: empty name", i)
		}
		if j, dup := names[nsName{w.Namespace, w.Name}]; dup {
			return nil, fmt.Errorf("workloads[%d]: %s is also workloads[%d]", i, w.Key(), j)
		}
		names[nsName{w.Namespace, w.Name}] = i
		for j, ip := range w.IPs {
			if !ip.IsValid() {
				return nil, fmt.Errorf("workloads[%d].ips[%d]: invalid address", i, j)
			}
			if prev, dup := x.byIP[ip.Unmap()]; dup {
				return nil, fmt.Errorf("workloads[%d].ips[%d]: %s is also workload %s", i, j, ip, prev.Key())
			}
			x.byIP[ip.Unmap()] = w
		}
	}
	for i := range x.meshlets {
		m := &x.meshlets[i]
		k := nsName{m.Namespace, m.Name}
		if _, dup := x.byName[k]; dup {
			return nil, fmt.Errorf("meshlets[%d]: duplicate Meshlet %s", i, m.Key())
		}
		x.byName[k] = m
		for j := range m.Spec.Server.Services {
			s := &m.Spec.Server.Services[j]
			sk := nsName{m.Namespace, s.Name}
			if prev, dup := x.byService[sk]; dup {
				return nil, fmt.Errorf("meshlets[%d].spec.server.services[%d]: service %s/%s is also served by Meshlet %s", i, j, m.Namespace, s.Name, prev.m.Key())
			}
			x.byService[sk] = serviceRef{m, s}
		}
	}
	for i := range x.workloads {
		w := &x.workloads[i]
		if m := x.MeshletOf(w); m != nil && m.Serves(w) {
			x.servers[m] = append(x.servers[m], w)
		}
	}
	return x, nil
}

// Workload returns the workload that has address ip, or nil.
func (x *Index) Workload(ip netip.Addr) *Workload {
	if x == nil {
		return nil
	}
	return x.byIP[ip.Unmap()]
}

// Meshlet returns the Meshlet namespace/name, or nil.
func (x *Index) Meshlet(namespace, name string) *Meshlet {
	if x == nil {
		return nil
	}
	return x.byName[nsName{namespace, name}]
}

// MeshletOf returns the Meshlet w joined, nil if w joined none or one that
// does not exist (or was rejected): such a pod is in no Meshlet.
func (x *Index) MeshletOf(w *Workload) *Meshlet {
	if w == nil {
		return nil
	}
	name := w.MeshletName()
	if name == "" {
		return nil
	}
	return x.Meshlet(w.Namespace, name)
}

// Service returns the Meshlet of namespace that serves the service name
// (the Kubernetes Service namespace/name), and that service; nil, nil if
// no Meshlet governs it.
func (x *Index) Service(namespace, name string) (*Meshlet, *Service) {
	if x == nil {
		return nil, nil
	}
	r := x.byService[nsName{namespace, name}]
	return r.m, r.svc
}

// Servers returns m's server pods (members its selector picks), in the
// order of the workloads given to NewIndex.
func (x *Index) Servers(m *Meshlet) []*Workload {
	if x == nil {
		return nil
	}
	return x.servers[m]
}

// Versions returns the distinct versions of m's server pods, sorted; ""
// stands for pods without a version label. The daemon compares them with
// m's canary weights: weights on versions that no pod has cannot be
// checked statically.
func (x *Index) Versions(m *Meshlet) []string {
	var vs []string
	for _, w := range x.Servers(m) {
		if v := w.Version(); !slices.Contains(vs, v) {
			vs = append(vs, v)
		}
	}
	slices.Sort(vs)
	return vs
}
