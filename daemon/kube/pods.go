package kube

import (
	"cmp"
	"maps"
	"net/netip"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/meshless/meshless/daemon/meshlet"
)

// workloads adds a Workload per pod that has addresses, does not use the
// host's network (its address is the node's, not its own) and has not
// finished (a Succeeded or Failed pod keeps its addresses in its status
// while a new pod may already have them). The service account is
// spec.serviceAccountName, "default" when empty. Labels are shared with
// the informer's cache, which never modifies them.
//
// An address held by two such pods (a deleted pod's object outlives its
// sandbox for a moment) goes to the one that is not terminating, then the
// newer one; the other loses that address, with a warning, and is left
// out if it has none left.
func (t *translation) workloads(pods []*corev1.Pod) {
	type cand struct {
		p   *corev1.Pod
		ips []netip.Addr
	}
	var cands []cand
	for _, p := range pods {
		if p == nil || p.Spec.HostNetwork || finished(p) {
			continue
		}
		if ips := podIPs(p); len(ips) > 0 {
			cands = append(cands, cand{p, ips})
		}
	}
	// Preferred owners first.
	slices.SortFunc(cands, func(a, b cand) int {
		return cmp.Or(
			cmp.Compare(boolInt(a.p.DeletionTimestamp != nil), boolInt(b.p.DeletionTimestamp != nil)),
			b.p.CreationTimestamp.Compare(a.p.CreationTimestamp.Time),
			cmp.Compare(a.p.Namespace, b.p.Namespace),
			cmp.Compare(a.p.Name, b.p.Name))
	})
	owner := map[netip.Addr]*corev1.Pod{}
	seen := map[string]bool{} // a cache never holds a pod twice; a caller's list might
	var out []meshlet.Workload
	for _, c := range cands {
		k := c.p.Namespace + "/" + c.p.Name
		if seen[k] {
			continue
		}
		seen[k] = true
		w := meshlet.Workload{
			Namespace:      c.p.Namespace,
			Name:           c.p.Name,
			Node:           c.p.Spec.NodeName,
			ServiceAccount: cmp.Or(c.p.Spec.ServiceAccountName, meshlet.DefaultServiceAccount),
			Labels:         c.p.Labels,
		}
		for _, ip := range c.ips {
			if o := owner[ip]; o != nil {
				t.warnf("pod %s/%s: address %s is also pod %s/%s's; left out", c.p.Namespace, c.p.Name, ip, o.Namespace, o.Name)
				continue
			}
			owner[ip] = c.p
			w.IPs = append(w.IPs, ip)
		}
		if len(w.IPs) > 0 {
			out = append(out, w)
		}
	}
	slices.SortFunc(out, func(a, b meshlet.Workload) int {
		return cmp.Or(cmp.Compare(a.Namespace, b.Namespace), cmp.Compare(a.Name, b.Name))
	})
	t.model.Workloads = out
}

// podIPs returns p's distinct valid addresses, unmapped: status.podIPs, or
// status.podIP when the list is empty.
func podIPs(p *corev1.Pod) []netip.Addr {
	var ips []netip.Addr
	add := func(s string) {
		if ip, err := netip.ParseAddr(s); err == nil && !slices.Contains(ips, ip.Unmap()) {
			ips = append(ips, ip.Unmap())
		}
	}
	for _, a := range p.Status.PodIPs {
		add(a.IP)
	}
	if len(p.Status.PodIPs) == 0 && p.Status.PodIP != "" {
		add(p.Status.PodIP)
	}
	return ips
}

func finished(p *corev1.Pod) bool {
	return p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

// podChanged reports whether a pod update changes the model: its node or
// labels (endpoints and workloads), or what makes it a workload (its
// addresses, finishing, terminating). Pods change status all the time;
// the rest does not matter (endpoint addresses come from the slices).
func podChanged(op, np *corev1.Pod) bool {
	return op.Spec.NodeName != np.Spec.NodeName ||
		!maps.Equal(op.Labels, np.Labels) ||
		!slices.Equal(podIPs(op), podIPs(np)) ||
		finished(op) != finished(np) ||
		(op.DeletionTimestamp == nil) != (np.DeletionTimestamp == nil)
}

// trimPod keeps what the model and the enrollment of running pods use of a
// Pod: identity and creation time, labels, the meshless.io/ annotations,
// node, service account, hostNetwork, phase and addresses.
func trimPod(obj any) (any, error) {
	p, ok := obj.(*corev1.Pod)
	if !ok {
		return obj, nil // a DeletedFinalStateUnknown tombstone
	}
	meta := metav1ObjectMeta(p.ObjectMeta)
	meta.DeletionTimestamp = p.DeletionTimestamp // terminating pods are not enrolled
	meta.CreationTimestamp = p.CreationTimestamp // the newer pod owns a reused address
	for k, v := range p.Annotations {
		if strings.HasPrefix(k, "meshless.io/") {
			if meta.Annotations == nil {
				meta.Annotations = map[string]string{}
			}
			meta.Annotations[k] = v
		}
	}
	return &corev1.Pod{
		TypeMeta:   p.TypeMeta,
		ObjectMeta: meta,
		Spec:       corev1.PodSpec{NodeName: p.Spec.NodeName, HostNetwork: p.Spec.HostNetwork, ServiceAccountName: p.Spec.ServiceAccountName},
		Status:     corev1.PodStatus{Phase: p.Status.Phase, PodIP: p.Status.PodIP, PodIPs: p.Status.PodIPs},
	}, nil
}

// trimNode keeps what the model uses of a Node: identity, pod CIDRs,
// addresses.
func trimNode(obj any) (any, error) {
	n, ok := obj.(*corev1.Node)
	if !ok {
		return obj, nil
	}
	return &corev1.Node{
		TypeMeta:   n.TypeMeta,
		ObjectMeta: metav1ObjectMeta(n.ObjectMeta),
		Spec:       corev1.NodeSpec{PodCIDR: n.Spec.PodCIDR, PodCIDRs: n.Spec.PodCIDRs},
		Status:     corev1.NodeStatus{Addresses: n.Status.Addresses},
	}, nil
}

func metav1ObjectMeta(m metav1.ObjectMeta) metav1.ObjectMeta {
	return metav1.ObjectMeta{
		Name:            m.Name,
		Namespace:       m.Namespace,
		UID:             m.UID,
		ResourceVersion: m.ResourceVersion,
		Labels:          m.Labels,
	}
}
