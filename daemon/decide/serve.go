package decide

import (
	"math/rand/v2"
	"strings"
	"sync"

	"github.com/meshless/meshless/daemon/meshlet"
	"github.com/meshless/meshless/daemon/metrics"
	"github.com/meshless/meshless/daemon/routes"
)

// The server side of a Meshlet (spec.server): canary weights choose among
// a service's versions on the source side, per new connection; maxConn
// and idleTimeout hold per destination pod on the destination side, where
// every connection to a pod is seen.

// canary narrows a service's targets to one version when the Meshlet
// serving the service gives weights: a version is picked with probability
// weight ÷ the sum of the weights of the versions that have a target, and
// the race runs among that version's targets. A version without a weight
// gets nothing once weights are given, one of weight 0 nothing either. It
// returns the targets unchanged for a service no Meshlet weighs, and a
// refusal when no version with a positive weight has a target. spill are
// the targets of the other versions with a positive weight: where every
// instance of the chosen version is full (maxConn), the connection spills
// over to them rather than fail while capacity is left.
func canary(snap *routes.Snapshot, service string, targets []Target) (chosen, spill []Target, refused *Refusal) {
	ns, name, _ := strings.Cut(service, "/")
	m, _ := snap.MeshletService(ns, name)
	if m == nil || len(m.Spec.Server.Canary) == 0 {
		return targets, nil, nil
	}
	weights := map[string]int{}
	total := 0
	for _, t := range targets {
		v := targetVersion(snap, t)
		if _, seen := weights[v]; seen {
			continue
		}
		w, _ := m.Weight(v)
		weights[v] = w
		total += w
	}
	if total == 0 {
		return nil, nil, refuse(metrics.ReasonNoEndpoints, "service %s: no instance of a version with a canary weight (weights %v, versions present %v)",
			service, m.Spec.Server.Canary, keys(weights))
	}
	pick := rand.IntN(total)
	var version string
	for _, c := range m.Spec.Server.Canary {
		w, present := weights[c.Version]
		if !present || w == 0 {
			continue
		}
		if pick < w {
			version = c.Version
			break
		}
		pick -= w
	}
	for _, t := range targets {
		switch v := targetVersion(snap, t); {
		case v == version:
			chosen = append(chosen, t)
		case weights[v] > 0:
			spill = append(spill, t)
		}
	}
	return chosen, spill, nil
}

// targetVersion is the version label of a target's pod: its workload's,
// else the service endpoint's labels.
func targetVersion(snap *routes.Snapshot, t Target) string {
	if w := snap.Workload(t.Addr.Addr()); w != nil {
		return w.Version()
	}
	return t.labels[meshlet.LabelVersion]
}

func keys(m map[string]int) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	return out
}

// limits counts the live connections of each destination pod per
// Meshlet service, for maxConn.
type limits struct {
	mu    sync.Mutex
	count map[slotKey]int
}

// slotKey is one pod's one service.
type slotKey struct{ pod, service string }

// take reserves a slot of k when fewer than max are taken (max 0: no
// limit); false when the pod is full.
func (l *limits) take(k slotKey, max int) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if max > 0 && l.count[k] >= max {
		return false
	}
	if l.count == nil {
		l.count = map[slotKey]int{}
	}
	l.count[k]++
	return true
}

// give releases a slot of k.
func (l *limits) give(k slotKey) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.count[k] <= 1 {
		delete(l.count, k)
		return
	}
	l.count[k]--
}

// InUse returns the live connections counted for pod ("namespace/name")
// and service, for status and tests.
func (d *Decider) InUse(pod, service string) int {
	d.limits.mu.Lock()
	defer d.limits.mu.Unlock()
	return d.limits.count[slotKey{pod, service}]
}

// full is the refusal of a pod at its maxConn.
func full(pod string, s *meshlet.Service) *Refusal {
	return refuse(metrics.ReasonMaxConn, "pod %s is at maxConn %d for service %s", pod, s.MaxConn, s.Name)
}
