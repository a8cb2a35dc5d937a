package cniapi

import (
	"context"
	"net/http"
	"time"
)

// DaemonStatus is the answer of GET /v1/status: the daemon's forwarding
// configuration and routing table, for meshlessctl status.
type DaemonStatus struct {
	// Node is the daemon's node name (--node-name).
	Node string `json:"node"`
	// Discovery names the source of the routing table, e.g.
	// "registry /etc/meshless/registry.yaml", or "none".
	Discovery string `json:"discovery"`
	// TunnelAddr is where the tunnel listens; empty when disabled.
	TunnelAddr string `json:"tunnelAddr,omitempty"`
	// InboundPolicy is "permissive" or "strict".
	InboundPolicy string `json:"inboundPolicy"`
	// RoutesUpdated is when the routing table was last replaced; zero
	// before the first valid registry.
	RoutesUpdated time.Time `json:"routesUpdated,omitzero"`
	// DiscoveryError is the last discovery problem (an invalid registry
	// file) while the table kept its last good content; empty once a
	// valid one loaded.
	DiscoveryError string `json:"discoveryError,omitempty"`
	// DiscoveryErrorAt is when DiscoveryError was seen.
	DiscoveryErrorAt time.Time `json:"discoveryErrorAt,omitzero"`
	// Nodes and Services summarise the routing table.
	Nodes    []NodeRoute    `json:"nodes"`
	Services []ServiceRoute `json:"services"`
	// Identity is the node's TLS identity (its SPIFFE ID), empty without
	// one; IdentityExpires when its certificate expires.
	Identity        string    `json:"identity,omitempty"`
	IdentityExpires time.Time `json:"identityExpires,omitzero"`
	// AccessPolicy is "enforce", "audit" or "off".
	AccessPolicy string `json:"accessPolicy"`
	// Policies says, for each registered pod, who it is and what the
	// Meshlets allow it.
	Policies []PodPolicy `json:"policies,omitempty"`
}

// PodPolicy is one registered pod's identity and access control.
type PodPolicy struct {
	// Pod is "namespace/name".
	Pod string `json:"pod"`
	// Identity is the pod's SPIFFE ID; empty when discovery does not
	// know the pod yet.
	Identity string `json:"identity,omitempty"`
	// Meshlet is "namespace/name" of the Meshlet the pod joined.
	Meshlet string `json:"meshlet,omitempty"`
	// Serves are the Meshlet's server services the pod serves, as
	// "name live/maxConn" ("name live/-" without a limit): live counts
	// the connections to the pod open now.
	Serves []string `json:"serves,omitempty"`
	// AllowedFrom are the Meshlets that may call those services.
	AllowedFrom []string `json:"allowedFrom,omitempty"`
	// MayCall are the services ("namespace/meshlet/service") the pod's
	// Meshlet declares as client.
	MayCall []string `json:"mayCall,omitempty"`
}

// NodeRoute is one node of the routing table.
type NodeRoute struct {
	Name     string   `json:"name"`
	Tunnel   string   `json:"tunnel"`
	PodCIDRs []string `json:"podCIDRs"`
	// Self marks the daemon's own node.
	Self bool `json:"self,omitempty"`
}

// ServiceRoute is one service of the routing table.
type ServiceRoute struct {
	// Name is "namespace/name".
	Name string   `json:"name"`
	VIPs []string `json:"vips"`
	// Ports are "port->targetPort".
	Ports []string `json:"ports"`
	// Endpoints are "ip@node".
	Endpoints []string `json:"endpoints"`
}

// Status returns the daemon's forwarding status.
func (c *Client) Status(ctx context.Context) (*DaemonStatus, error) {
	var st DaemonStatus
	if err := c.do(ctx, http.MethodGet, "/v1/status", nil, &st); err != nil {
		return nil, err
	}
	return &st, nil
}
