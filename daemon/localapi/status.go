package localapi

import (
	"cmp"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"

	"github.com/meshless/meshless/daemon/cniapi"
	"github.com/meshless/meshless/daemon/discovery"
	"github.com/meshless/meshless/daemon/identity"
	"github.com/meshless/meshless/daemon/meshlet"
	"github.com/meshless/meshless/daemon/routes"
)

// StatusSource is what GET /v1/status reports.
type StatusSource struct {
	// Node, TunnelAddr, InboundPolicy and AccessPolicy are the daemon's
	// configuration.
	Node, TunnelAddr, InboundPolicy, AccessPolicy string
	// TrustDomain names the workload identities.
	TrustDomain string
	// Routes is the routing table. Required.
	Routes *routes.Table
	// Discovery reports on the table's source. Required.
	Discovery interface{ Status() discovery.Status }
	// Identity is the node's TLS identity; nil without one.
	Identity *identity.Source
	// Pods lists the registered pods; nil for none.
	Pods interface{ List() []cniapi.PodStatus }
	// Live counts a pod's live connections to a Meshlet service
	// (decide.Decider.InUse); nil shows none.
	Live interface{ InUse(pod, service string) int }
}

func (s *api) status(w http.ResponseWriter, r *http.Request) {
	if s.st == nil {
		s.error(w, r, http.StatusNotFound, fmt.Errorf("no status here"))
		return
	}
	s.reply(w, http.StatusOK, s.st.Render())
}

// Render builds the status answer from the current routing snapshot.
func (src *StatusSource) Render() *cniapi.DaemonStatus {
	ds := src.Discovery.Status()
	st := &cniapi.DaemonStatus{
		Node: src.Node, TunnelAddr: src.TunnelAddr, InboundPolicy: src.InboundPolicy,
		Discovery: ds.Source, RoutesUpdated: ds.Updated, DiscoveryError: ds.Err, DiscoveryErrorAt: ds.ErrAt,
	}
	snap := src.Routes.Snapshot()
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
	slices.SortFunc(st.Services, func(a, b cniapi.ServiceRoute) int { return strings.Compare(a.Name, b.Name) })
	st.AccessPolicy = src.AccessPolicy
	if src.Identity != nil {
		if m := src.Identity.Material(); m != nil {
			st.Identity, st.IdentityExpires = m.ID().String(), m.NotAfter()
		}
	}
	if src.Pods != nil {
		for _, p := range src.Pods.List() {
			st.Policies = append(st.Policies, podPolicy(snap, p, src.TrustDomain, src.Live))
		}
	}
	return st
}

// podPolicy says who a registered pod is in the routing table's view and
// what its Meshlet allows.
func podPolicy(snap *routes.Snapshot, p cniapi.PodStatus, trustDomain string, live interface{ InUse(pod, service string) int }) cniapi.PodPolicy {
	pp := cniapi.PodPolicy{Pod: p.Namespace + "/" + p.Name}
	var w *meshlet.Workload
	for _, ip := range p.IPs {
		if w = snap.Workload(ip); w != nil {
			break
		}
	}
	if w == nil {
		return pp
	}
	pp.Identity = w.Identity(trustDomain)
	m := snap.MeshletOf(w)
	if m == nil {
		return pp
	}
	pp.Meshlet = m.Key()
	for _, c := range m.Spec.Client {
		ns := cmp.Or(c.Namespace, m.Namespace)
		pp.MayCall = append(pp.MayCall, ns+"/"+c.Meshlet+"/"+c.Service)
	}
	if !m.Serves(w) {
		return pp
	}
	for _, s := range m.Spec.Server.Services {
		n, limit := 0, "-"
		if live != nil {
			n = live.InUse(w.Key(), s.Name)
		}
		if s.MaxConn > 0 {
			limit = strconv.Itoa(s.MaxConn)
		}
		pp.Serves = append(pp.Serves, fmt.Sprintf("%s %d/%s", s.Name, n, limit))
	}
	for _, other := range snap.Model().Meshlets {
		for _, s := range m.Spec.Server.Services {
			if other.Uses(m.Namespace, m.Name, s.Name) && !slices.Contains(pp.AllowedFrom, other.Key()) {
				pp.AllowedFrom = append(pp.AllowedFrom, other.Key())
			}
		}
	}
	return pp
}
