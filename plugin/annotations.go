package plugin

import (
	"net/netip"
	"slices"
	"strconv"
	"strings"
)

// Pod annotations the plugin honours, passed by the runtime in
// runtimeConfig["io.kubernetes.cri.pod-annotations"]. They only add
// exclusions to those of the conf; they cannot remove one.
const (
	// AnnotationMesh set to "disabled" keeps the pod out of the mesh.
	AnnotationMesh = "meshless.io/mesh"
	// AnnotationExcludeInboundPorts is a comma-separated port list.
	AnnotationExcludeInboundPorts = "meshless.io/exclude-inbound-ports"
	// AnnotationExcludeOutboundPorts is a comma-separated port list.
	AnnotationExcludeOutboundPorts = "meshless.io/exclude-outbound-ports"
	// AnnotationExcludeOutboundCIDRs is a comma-separated list of CIDRs.
	AnnotationExcludeOutboundCIDRs = "meshless.io/exclude-outbound-cidrs"
)

// exclusions are the ports and CIDRs that one pod's rules let pass.
type exclusions struct {
	inboundPorts  []uint16
	outboundPorts []uint16
	outboundCIDRs []netip.Prefix
}

// podExclusions merges the conf's exclusions with the pod's annotations. It
// reports optOut when the pod asks to stay out of the mesh.
func (c *Config) podExclusions() (ex exclusions, optOut bool, err error) {
	ann := c.RuntimeConfig.PodAnnotations
	switch v := ann[AnnotationMesh]; v {
	case "", "enabled":
	case "disabled":
		return ex, true, nil
	default:
		return ex, false, invalidf("annotation %s: %q is not enabled or disabled", AnnotationMesh, v)
	}
	in, err := annotationPorts(ann, AnnotationExcludeInboundPorts)
	if err != nil {
		return ex, false, err
	}
	out, err := annotationPorts(ann, AnnotationExcludeOutboundPorts)
	if err != nil {
		return ex, false, err
	}
	cidrs, err := parseCIDRs("annotation "+AnnotationExcludeOutboundCIDRs, splitList(ann[AnnotationExcludeOutboundCIDRs]))
	if err != nil {
		return ex, false, err
	}
	ex.inboundPorts = mergePorts(c.inboundPorts, in)
	ex.outboundPorts = mergePorts(c.outboundPorts, out)
	ex.outboundCIDRs = append(slices.Clone(c.outboundCIDRs), cidrs...)
	return ex, false, nil
}

func annotationPorts(ann map[string]string, key string) ([]uint16, error) {
	items := splitList(ann[key])
	ports := make([]int, 0, len(items))
	for i, s := range items {
		p, err := strconv.Atoi(s)
		if err != nil {
			return nil, invalidf("annotation %s[%d]: %q is not a port number", key, i, s)
		}
		ports = append(ports, p)
	}
	return parsePorts("annotation "+key, ports)
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

func mergePorts(a, b []uint16) []uint16 {
	m := append(slices.Clone(a), b...)
	slices.Sort(m)
	return slices.Compact(m)
}
