package registry

import (
	"fmt"
	"net/netip"
	"strings"

	"github.com/meshless/meshless/daemon/meshlet"
)

// meshlets converts and checks the meshlets: entries. Beyond
// meshlet.Validate and meshlet.Select (the same rules as the apiserver's
// schema and the Kubernetes source), the file must not hold unknown keys
// in a Meshlet and must give spec and every canary weight: a policy says
// what it means. Errors point at the line of the innermost entry.
func (v *validator) meshlets(raws []rawMeshlet) []meshlet.Meshlet {
	ms := make([]meshlet.Meshlet, len(raws))
	lines := make([]map[string]int, len(raws))
	for i := range raws {
		ms[i], lines[i] = v.meshlet(i, &raws[i])
	}
	ok, rejected := meshlet.Select(ms)
	for _, r := range rejected {
		for _, fe := range r.Errs {
			v.fail(lineOf(lines[r.Index], fe.Path), fmt.Sprintf("meshlets[%d].%s", r.Index, fe.Path), "%s", fe.Msg)
		}
	}
	return ok
}

// meshlet converts one entry and returns the line of each of its parts,
// keyed by their path relative to the Meshlet ("", "spec.client[0]").
func (v *validator) meshlet(i int, rm *rawMeshlet) (meshlet.Meshlet, map[string]int) {
	at := fmt.Sprintf("meshlets[%d]", i)
	m := meshlet.Meshlet{Namespace: rm.Namespace, Name: rm.Name}
	if m.Namespace == "" {
		m.Namespace = "default"
	}
	lines := map[string]int{"": rm.line}
	v.unknown(at, rm.unknown)
	rs := rm.Spec
	if rs == nil {
		v.fail(rm.line, at+".spec", "required (write spec: {} for a Meshlet that declares nothing)")
		return m, lines
	}
	lines["spec"] = rs.line
	v.unknown(at+".spec", rs.unknown)
	for j, rc := range rs.Client {
		p := fmt.Sprintf("spec.client[%d]", j)
		lines[p] = rc.line
		v.unknown(at+"."+p, rc.unknown)
		m.Spec.Client = append(m.Spec.Client, meshlet.ClientRef{Namespace: rc.Namespace, Meshlet: rc.Meshlet, Service: rc.Service})
	}
	if srv := rs.Server; srv != nil {
		lines["spec.server"] = srv.line
		v.unknown(at+".spec.server", srv.unknown)
		m.Spec.Server.Selector = srv.Selector
		for j, rs := range srv.Services {
			p := fmt.Sprintf("spec.server.services[%d]", j)
			lines[p] = rs.line
			v.unknown(at+"."+p, rs.unknown)
			s := meshlet.Service{Name: rs.Name, IdleTimeout: rs.IdleTimeout}
			if rs.MaxConn != nil {
				s.MaxConn = *rs.MaxConn
			}
			m.Spec.Server.Services = append(m.Spec.Server.Services, s)
		}
		for j, rc := range srv.Canary {
			p := fmt.Sprintf("spec.server.canary[%d]", j)
			lines[p] = rc.line
			v.unknown(at+"."+p, rc.unknown)
			c := meshlet.Canary{Version: rc.Version}
			if rc.Weight == nil {
				v.fail(rc.line, at+"."+p+".weight", "required")
			} else {
				c.Weight = *rc.Weight
			}
			m.Spec.Server.Canary = append(m.Spec.Server.Canary, c)
		}
	}
	return m, lines
}

func (v *validator) unknown(at string, keys []rawKey) {
	for _, k := range keys {
		v.fail(k.line, at+"."+k.name, "unknown field (known: %s)", k.known)
	}
}

// lineOf returns the line of the innermost part of path that has one.
func lineOf(lines map[string]int, path string) int {
	for {
		if l, ok := lines[path]; ok {
			return l
		}
		i := strings.LastIndexAny(path, ".[")
		if i < 0 {
			return lines[""]
		}
		path = path[:i]
	}
}

// workloads converts and checks the workloads: entries. Like the rest of
// the file (and unlike Meshlets) they may carry fields this version does
// not know.
func (v *validator) workloads(raws []rawWorkload) []meshlet.Workload {
	names := map[string]int{}
	ips := map[netip.Addr]int{}
	var out []meshlet.Workload
	for i, rw := range raws {
		at := fmt.Sprintf("workloads[%d]", i)
		w := meshlet.Workload{Namespace: rw.Namespace, Name: rw.Name, Node: rw.Node, ServiceAccount: rw.ServiceAccount, Labels: rw.Labels}
		if w.Namespace == "" {
			w.Namespace = "default"
		}
		if w.ServiceAccount == "" {
			w.ServiceAccount = meshlet.DefaultServiceAccount
		}
		if rw.Name == "" {
			v.fail(rw.line, at+".name", "required")
		} else if j, dup := names[w.Key()]; dup {
			v.fail(rw.line, at+".name", "duplicate workload %s (also workloads[%d])", w.Key(), j)
		} else {
			names[w.Key()] = i
		}
		a, err := netip.ParseAddr(strings.TrimSpace(rw.IP))
		switch {
		case rw.IP == "":
			v.fail(rw.line, at+".ip", "required")
		case err != nil:
			v.fail(rw.line, at+".ip", "invalid IP %q", rw.IP)
		default:
			if j, dup := ips[a.Unmap()]; dup {
				v.fail(rw.line, at+".ip", "%s is also workloads[%d]", a.Unmap(), j)
			}
			ips[a.Unmap()] = i
			w.IPs = []netip.Addr{a.Unmap()}
		}
		switch {
		case rw.Node == "":
			v.fail(rw.line, at+".node", "required")
		case !v.nodes[rw.Node]:
			v.fail(rw.line, at+".node", "unknown node %q", rw.Node)
		case len(w.IPs) > 0:
			if prev, ok := v.endpointNode[w.IPs[0]]; ok && prev != rw.Node {
				v.fail(rw.line, at+".node", "%s is an endpoint on node %q", w.IPs[0], prev)
			}
		}
		out = append(out, w)
	}
	return out
}
