package plugin

import (
	"net/netip"
	"slices"

	"github.com/meshless/meshless/daemon/cniapi"
)

// Pod annotations the plugin honours, passed by the runtime in
// runtimeConfig["io.kubernetes.cri.pod-annotations"]. They only add
// exclusions to those of the conf; they cannot remove one. The parsing is
// shared with the daemon's enrollment of running pods (cniapi).
const (
	// AnnotationMesh set to "disabled" keeps the pod out of the mesh.
	AnnotationMesh = cniapi.AnnotationMesh
	// AnnotationExcludeInboundPorts is a comma-separated port list.
	AnnotationExcludeInboundPorts = cniapi.AnnotationExcludeInboundPorts
	// AnnotationExcludeOutboundPorts is a comma-separated port list.
	AnnotationExcludeOutboundPorts = cniapi.AnnotationExcludeOutboundPorts
	// AnnotationExcludeOutboundCIDRs is a comma-separated list of CIDRs.
	AnnotationExcludeOutboundCIDRs = cniapi.AnnotationExcludeOutboundCIDRs
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
	ann, optOut, err := cniapi.ParseAnnotations(c.RuntimeConfig.PodAnnotations)
	if err != nil {
		return ex, false, &configError{msg: err.Error()}
	}
	if optOut {
		return ex, true, nil
	}
	ex.inboundPorts = mergePorts(c.inboundPorts, ann.InboundPorts)
	ex.outboundPorts = mergePorts(c.outboundPorts, ann.OutboundPorts)
	ex.outboundCIDRs = append(slices.Clone(c.outboundCIDRs), ann.OutboundCIDRs...)
	return ex, false, nil
}

func mergePorts(a, b []uint16) []uint16 {
	m := append(slices.Clone(a), b...)
	slices.Sort(m)
	return slices.Compact(m)
}
