package cniapi

import (
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"
)

// Pod annotations Meshless honours: the plugin reads them from the
// runtime's runtimeConfig, the daemon's enrollment of running pods from
// the API server. They only add exclusions; they cannot remove one.
const (
	// AnnotationMesh set to "disabled" keeps the pod out of the mesh.
	AnnotationMesh = "meshless.io/mesh"
	// AnnotationExcludeInboundPorts is a comma-separated port list.
	AnnotationExcludeInboundPorts = "meshless.io/exclude-inbound-ports"
	// AnnotationExcludeOutboundPorts is a comma-separated port list.
	AnnotationExcludeOutboundPorts = "meshless.io/exclude-outbound-ports"
	// AnnotationExcludeOutboundCIDRs is a comma-separated list of CIDRs
	// (a bare address is one host).
	AnnotationExcludeOutboundCIDRs = "meshless.io/exclude-outbound-cidrs"
)

// ParseAnnotations reads a pod's Meshless annotations: optOut when it asks
// to stay out of the mesh, else the exclusions it adds (ports sorted and
// deduplicated, prefixes masked).
func ParseAnnotations(ann map[string]string) (ex Exclusions, optOut bool, err error) {
	switch v := ann[AnnotationMesh]; v {
	case "", "enabled":
	case "disabled":
		return ex, true, nil
	default:
		return ex, false, fmt.Errorf("annotation %s: %q is not enabled or disabled", AnnotationMesh, v)
	}
	if ex.InboundPorts, err = annotationPorts(ann, AnnotationExcludeInboundPorts); err != nil {
		return ex, false, err
	}
	if ex.OutboundPorts, err = annotationPorts(ann, AnnotationExcludeOutboundPorts); err != nil {
		return ex, false, err
	}
	for i, s := range splitList(ann[AnnotationExcludeOutboundCIDRs]) {
		p, perr := netip.ParsePrefix(s)
		if perr != nil {
			a, aerr := netip.ParseAddr(s)
			if aerr != nil {
				return ex, false, fmt.Errorf("annotation %s[%d]: %q is not a CIDR or IP address", AnnotationExcludeOutboundCIDRs, i, s)
			}
			p = netip.PrefixFrom(a, a.BitLen())
		}
		ex.OutboundCIDRs = append(ex.OutboundCIDRs, p.Masked())
	}
	return ex, false, nil
}

func annotationPorts(ann map[string]string, key string) ([]uint16, error) {
	var out []uint16
	for i, s := range splitList(ann[key]) {
		p, err := strconv.Atoi(s)
		if err != nil {
			return nil, fmt.Errorf("annotation %s[%d]: %q is not a port number", key, i, s)
		}
		if p < 1 || p > 65535 {
			return nil, fmt.Errorf("annotation %s[%d]: port %d out of range 1-65535", key, i, p)
		}
		out = append(out, uint16(p))
	}
	slices.Sort(out)
	return slices.Compact(out), nil
}

func splitList(s string) []string {
	var out []string
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}
