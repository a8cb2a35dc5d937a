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
