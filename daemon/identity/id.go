package identity

import (
	"fmt"
	"strings"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// DefaultTrustDomain is the trust domain when none is configured
// (meshlessd --trust-domain, meshlessctl ca issue --trust-domain).
const DefaultTrustDomain = "cluster.local"

// The SPIFFE spec asks implementations to support IDs of up to 2048 bytes
// and trust domains of up to 255; longer ones come from no sane issuer, so
// they are refused before anything else looks at them.
const (
	maxIDLen          = 2048
	maxTrustDomainLen = 255
)

// Path segments that make an ID a node's or a workload's. The "meshless"
// prefix keeps node IDs out of the namespace that Kubernetes-style
// workload IDs (/ns/...) use, so no name can make one look like the other.
const (
	nodePrefix     = "/meshless/node/"
	workloadPrefix = "/ns/"
)

// ParseTrustDomain parses a trust domain name such as "cluster.local":
// lowercase letters, digits, '.', '-' and '_', at most 255 bytes. The
// spiffe:// form is refused so that a flag holds one spelling only.
func ParseTrustDomain(name string) (spiffeid.TrustDomain, error) {
	if strings.Contains(name, ":/") {
		return spiffeid.TrustDomain{}, fmt.Errorf("trust domain %q: want a bare name, not an ID", name)
	}
	if len(name) > maxTrustDomainLen {
		return spiffeid.TrustDomain{}, fmt.Errorf("trust domain: longer than %d bytes", maxTrustDomainLen)
	}
	td, err := spiffeid.TrustDomainFromString(name)
	if err != nil {
		return spiffeid.TrustDomain{}, fmt.Errorf("trust domain %q: %w", name, err)
	}
	return td, nil
}

// ParseID parses and validates a SPIFFE ID by the spec's rules: scheme
// spiffe, a trust domain as in ParseTrustDomain, path segments of letters,
// digits, '.', '-' and '_', no empty, "." or ".." segments, no trailing
// slash, no query, fragment, port or user info.
func ParseID(s string) (spiffeid.ID, error) {
	if len(s) > maxIDLen {
		return spiffeid.ID{}, fmt.Errorf("spiffe id: longer than %d bytes", maxIDLen)
	}
	id, err := spiffeid.FromString(s)
	if err != nil {
		return spiffeid.ID{}, fmt.Errorf("spiffe id %q: %w", s, err)
	}
	if len(id.TrustDomain().Name()) > maxTrustDomainLen {
		return spiffeid.ID{}, fmt.Errorf("spiffe id: trust domain longer than %d bytes", maxTrustDomainLen)
	}
	return id, nil
}

// NodeID is the identity of node's daemon:
// spiffe://<td>/meshless/node/<node>. node must be one valid path segment.
func NodeID(td spiffeid.TrustDomain, node string) (spiffeid.ID, error) {
	if td.IsZero() {
		return spiffeid.ID{}, fmt.Errorf("node id: empty trust domain")
	}
	id, err := spiffeid.FromSegments(td, "meshless", "node", node)
	if err != nil {
		return spiffeid.ID{}, fmt.Errorf("node id for %q: %w", node, err)
	}
	return id, nil
}

// WorkloadID is the identity of a service account:
// spiffe://<td>/ns/<namespace>/sa/<serviceaccount>. Both names must be
// valid path segments (every Kubernetes name is).
func WorkloadID(td spiffeid.TrustDomain, namespace, serviceAccount string) (spiffeid.ID, error) {
	if td.IsZero() {
		return spiffeid.ID{}, fmt.Errorf("workload id: empty trust domain")
	}
	id, err := spiffeid.FromSegments(td, "ns", namespace, "sa", serviceAccount)
	if err != nil {
		return spiffeid.ID{}, fmt.Errorf("workload id for %s/%s: %w", namespace, serviceAccount, err)
	}
	return id, nil
}

// NodeName returns the node of a node ID. Any other ID, a workload's
// included, is refused with an error wrapping ErrNotNode.
func NodeName(id spiffeid.ID) (string, error) {
	node, ok := strings.CutPrefix(id.Path(), nodePrefix)
	// A valid ID has no empty segments, so a non-empty rest without '/'
	// is exactly one segment.
	if !ok || node == "" || strings.Contains(node, "/") {
		return "", fmt.Errorf("%q: %w", id.String(), ErrNotNode)
	}
	return node, nil
}

// Workload returns the namespace and service account of a workload ID;
// any other ID is refused.
func Workload(id spiffeid.ID) (namespace, serviceAccount string, err error) {
	rest, ok := strings.CutPrefix(id.Path(), workloadPrefix)
	var parts []string
	if ok {
		parts = strings.Split(rest, "/")
	}
	if len(parts) != 3 || parts[1] != "sa" {
		return "", "", fmt.Errorf("%q: not a workload identity (want /ns/<namespace>/sa/<serviceaccount>)", id.String())
	}
	return parts[0], parts[2], nil
}
