package localapi

import (
	"fmt"
	"net/http"
	"slices"
	"strings"

	"github.com/meshless/meshless/daemon/cniapi"
	"github.com/meshless/meshless/daemon/discovery"
	"github.com/meshless/meshless/daemon/routes"
)

// StatusSource is what GET /v1/status reports.
type StatusSource struct {
	// Node, TunnelAddr and InboundPolicy are the daemon's configuration.
	Node, TunnelAddr, InboundPolicy string
	// Routes is the routing table. Required.
	Routes *routes.Table
	// Discovery reports on the table's source. Required.
	Discovery interface{ Status() discovery.Status }
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
	return st
}
