package enroll

import (
	"net/netip"
	"slices"

	corev1 "k8s.io/api/core/v1"

	"github.com/meshless/meshless/daemon/cniapi"
)

// DefaultExcludeNamespaces is the plugin's default excludeNamespaces.
var DefaultExcludeNamespaces = []string{"kube-system"}

// Candidate is a running pod of this node that is not in the mesh yet.
type Candidate struct {
	Pod        *corev1.Pod
	IPs        []netip.Addr
	Exclusions cniapi.Exclusions
}

// Key is the pod's namespace/name.
func (c Candidate) Key() string { return c.Pod.Namespace + "/" + c.Pod.Name }

// Skip is a pod left alone, and why.
type Skip struct {
	Pod    string // namespace/name
	Reason string
}

// Registered is what the agent has: the pods' UIDs and addresses.
type Registered struct {
	UIDs map[string]bool
	IPs  map[netip.Addr]bool
}

// registered indexes the agent's registrations.
func registered(l []cniapi.PodStatus) Registered {
	r := Registered{UIDs: map[string]bool{}, IPs: map[netip.Addr]bool{}}
	for _, p := range l {
		if p.UID != "" {
			r.UIDs[p.UID] = true
		}
		for _, ip := range p.IPs {
			r.IPs[ip.Unmap()] = true
		}
	}
	return r
}

// Select returns the pods to enroll: scheduled on node, Running, not
// hostNetwork, with an address, not excluded by namespace or by the
// meshless.io/mesh annotation, and not registered already (by UID or by
// any of its addresses). Every other pod on the node is in skipped.
func Select(pods []*corev1.Pod, node string, excludeNamespaces []string, reg Registered) (cands []Candidate, skipped []Skip) {
	for _, p := range pods {
		key := p.Namespace + "/" + p.Name
		skip := func(why string) { skipped = append(skipped, Skip{Pod: key, Reason: why}) }
		if p.Spec.NodeName != node || node == "" {
			continue // not ours: not even worth a skip line
		}
		if p.DeletionTimestamp != nil {
			skip("terminating")
			continue
		}
		if p.Status.Phase != corev1.PodRunning {
			skip("phase " + string(p.Status.Phase))
			continue
		}
		// A hostNetwork pod's netns is the node's: rules there would
		// redirect the whole node.
		if p.Spec.HostNetwork {
			skip("hostNetwork")
			continue
		}
		if p.Namespace != "" && slices.Contains(excludeNamespaces, p.Namespace) {
			skip("namespace excluded")
			continue
		}
		ex, optOut, err := cniapi.ParseAnnotations(p.Annotations)
		if err != nil {
			skip("invalid annotation: " + err.Error())
			continue
		}
		if optOut {
			skip("annotation " + cniapi.AnnotationMesh + "=disabled")
			continue
		}
		ips := podIPs(p)
		if len(ips) == 0 {
			skip("no pod IP")
			continue
		}
		if reg.UIDs[string(p.UID)] || slices.ContainsFunc(ips, func(a netip.Addr) bool { return reg.IPs[a] }) {
			skip("registered")
			continue
		}
		cands = append(cands, Candidate{Pod: p, IPs: ips, Exclusions: ex})
	}
	return cands, skipped
}

// podIPs returns the pod's addresses (status.podIPs, else status.podIP).
func podIPs(p *corev1.Pod) []netip.Addr {
	var out []netip.Addr
	add := func(s string) {
		if a, err := netip.ParseAddr(s); err == nil && !slices.Contains(out, a.Unmap()) {
			out = append(out, a.Unmap())
		}
	}
	for _, ip := range p.Status.PodIPs {
		add(ip.IP)
	}
	add(p.Status.PodIP)
	return out
}

// Stale returns the enrolled registrations (cniapi.EnrolledPrefix) whose
// pod is no longer a running pod of this node: deleted, moved, finished.
// pods must be the complete list of the node's pods from a synced cache.
func Stale(regs []cniapi.PodStatus, pods []*corev1.Pod, node string) []cniapi.PodStatus {
	live := map[string]bool{}
	for _, p := range pods {
		if p.Spec.NodeName == node && p.Status.Phase != corev1.PodSucceeded && p.Status.Phase != corev1.PodFailed {
			live[string(p.UID)] = true
		}
	}
	var out []cniapi.PodStatus
	for _, r := range regs {
		if r.Attachment.Enrolled() && !live[r.UID] {
			out = append(out, r)
		}
	}
	return out
}

// Attachment is the synthetic attachment of an enrolled pod.
func Attachment(uid string) cniapi.Attachment {
	return cniapi.Attachment{ContainerID: cniapi.EnrolledPrefix + uid, IfName: "eth0"}
}
