package decide

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/meshless/meshless/daemon/meshlet"
	"github.com/meshless/meshless/daemon/routes"
)

// AccessPolicy says what the decisions do with the access control that
// Meshlets declare (meshlessd --access-policy).
type AccessPolicy int

const (
	// Enforce refuses what the Meshlets do not allow (the default).
	Enforce AccessPolicy = iota
	// Audit lets it through, but logs and counts what Enforce would
	// refuse (meshless_policy_audit_total).
	Audit
	// Off does not look at Meshlets' client declarations.
	Off
)

// String returns "enforce", "audit" or "off".
func (p AccessPolicy) String() string {
	switch p {
	case Audit:
		return "audit"
	case Off:
		return "off"
	}
	return "enforce"
}

// Set implements flag.Value.
func (p *AccessPolicy) Set(s string) error {
	switch strings.ToLower(s) {
	case "", "enforce":
		*p = Enforce
	case "audit":
		*p = Audit
	case "off":
		*p = Off
	default:
		return fmt.Errorf("unknown access policy %q (want enforce, audit or off)", s)
	}
	return nil
}

// access is what an access check looks at. It is kept with every live
// connection a Meshlet governs, so that a policy change can judge the
// connection again.
type access struct {
	from From
	// srcIPs are the source pod's addresses: its registration for
	// FromLocal, the verified header source for FromPeer; nil from
	// outside the mesh.
	srcIPs []netip.Addr
	// client is the client's address (FromOutside).
	client netip.Addr
	dst    netip.AddrPort
	// service is the service name the client addressed, if any.
	service string
}

// verdict is an access check's answer.
type verdict struct {
	// governed: the destination is a server service of a Meshlet;
	// nothing else is checked.
	governed bool
	allowed  bool
	// server and service are what the connection reaches, when governed.
	server  *meshlet.Meshlet
	service *meshlet.Service
	// src is the source workload, when known; dst the destination's.
	src, dst *meshlet.Workload
	// why explains a denial, naming source and destination.
	why string
}

// check judges a against the Meshlets of snap. A connection is governed
// when its destination pod serves a Meshlet and its port is the target
// port of one of that Meshlet's server services (the Kubernetes Service of
// that name in the Meshlet's namespace); everything else is allowed, as
// without Meshlets. A governed connection is allowed when its source pod
// joined a Meshlet that declares that service as client, or when it comes
// from outside the mesh from one of the node's own addresses (kubelet
// probes).
func check(snap *routes.Snapshot, nodeAddrs AddrSet, a access) verdict {
	dstW := snap.Workload(a.dst.Addr())
	if dstW == nil {
		return verdict{allowed: true}
	}
	server := snap.MeshletOf(dstW)
	if server == nil || !server.Serves(dstW) {
		return verdict{allowed: true}
	}
	services := servedAt(snap, server, a.dst, a.service)
	if len(services) == 0 {
		return verdict{allowed: true}
	}
	v := verdict{governed: true, server: server, service: services[0], dst: dstW}
	target := fmt.Sprintf("service %s/%s/%s on %s", server.Namespace, server.Name, services[0].Name, dstW.Key())
	if a.from == FromOutside {
		if nodeAddrs != nil && nodeAddrs.Contains(a.client) {
			v.allowed = true
			return v
		}
		v.why = fmt.Sprintf("%s is outside the mesh; %s takes only clients its Meshlet's clients declare", a.client, target)
		return v
	}
	for _, ip := range a.srcIPs {
		if v.src = snap.Workload(ip); v.src != nil {
			break
		}
	}
	if v.src == nil {
		v.why = fmt.Sprintf("source %v is no known pod; %s takes only declared clients", a.srcIPs, target)
		return v
	}
	client := snap.MeshletOf(v.src)
	if client == nil {
		v.why = fmt.Sprintf("pod %s joined no Meshlet, so it declares no client of %s", v.src.Key(), target)
		return v
	}
	for _, s := range services {
		if client.Uses(server.Namespace, server.Name, s.Name) {
			v.allowed, v.service = true, s
			return v
		}
	}
	v.why = fmt.Sprintf("Meshlet %s of pod %s does not declare %s as client", client.Key(), v.src.Key(), target)
	return v
}

// servedAt returns the server services of m whose Kubernetes Service has
// the endpoint dst; the one named claimed first.
func servedAt(snap *routes.Snapshot, m *meshlet.Meshlet, dst netip.AddrPort, claimed string) []*meshlet.Service {
	var out []*meshlet.Service
	for _, id := range snap.ServicesAt(dst) {
		ns, name, _ := strings.Cut(id, "/")
		if ns != m.Namespace {
			continue
		}
		if s := m.Service(name); s != nil {
			out = append(out, s)
		}
	}
	if i := slices.IndexFunc(out, func(s *meshlet.Service) bool { return s.Name == claimed }); i > 0 {
		out[0], out[i] = out[i], out[0]
	}
	return out
}
