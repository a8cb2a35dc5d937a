package decide

import (
	"math"
	"net/netip"
	"testing"
	"time"

	"github.com/meshless/meshless/daemon/meshlet"
	"github.com/meshless/meshless/daemon/metrics"
	"github.com/meshless/meshless/daemon/routes"
)

// serveModel is policyModel with web served by b (v1, n1) and r (v2, n2),
// given canary weights and service limits; client declares web.
func serveModel(canary []meshlet.Canary, svc meshlet.Service) routes.Model {
	m := policyModel(true)
	for i := range m.Workloads {
		switch m.Workloads[i].Name {
		case "b":
			m.Workloads[i].Labels[meshlet.LabelVersion] = "v1"
		case "r":
			m.Workloads[i].Labels = map[string]string{meshlet.LabelMeshlet: "web", meshlet.LabelVersion: "v2"}
		}
	}
	m.Services[0].Endpoints = append(m.Services[0].Endpoints, routes.Endpoint{IP: netip.MustParseAddr(pR), Node: "n2"})
	for i := range m.Meshlets {
		if m.Meshlets[i].Name == "web" {
			m.Meshlets[i].Spec.Server.Services = []meshlet.Service{svc}
			m.Meshlets[i].Spec.Server.Canary = canary
		}
	}
	return m
}

// TestCanary: over 2000 connections the versions' shares stay within a
// chi-square bound of their weights (p = 0.001, one degree of freedom:
// 10.83); a version of weight 0 gets nothing.
func TestCanary(t *testing.T) {
	d, table, pods := policyWorld(t, Enforce)
	src := ap(pA + ":1")
	vip := ap("198.18.100.30:80")
	for _, tt := range []struct {
		v1, v2 int
	}{{90, 10}, {99, 1}, {100, 0}, {0, 100}} {
		if err := table.Update(serveModel([]meshlet.Canary{{Version: "v1", Weight: tt.v1}, {Version: "v2", Weight: tt.v2}}, meshlet.Service{Name: "web"})); err != nil {
			t.Fatal(err)
		}
		const n = 2000
		got := map[string]int{}
		for range n {
			p := d.Outbound(pods["a"], src, vip)
			if p.Refused != nil || len(p.Targets) != 1 {
				t.Fatalf("%d/%d: plan %+v", tt.v1, tt.v2, p)
			}
			got[p.Targets[0].Addr.Addr().String()]++
		}
		o1, o2 := float64(got[pB]), float64(got[pR])
		e1, e2 := n*float64(tt.v1)/100, n*float64(tt.v2)/100
		switch {
		case e1 == 0 || e2 == 0:
			if (e1 == 0 && o1 != 0) || (e2 == 0 && o2 != 0) {
				t.Errorf("%d/%d: a weight 0 version got connections: v1 %v, v2 %v", tt.v1, tt.v2, o1, o2)
			}
		default:
			chi := math.Pow(o1-e1, 2)/e1 + math.Pow(o2-e2, 2)/e2
			if chi > 10.83 {
				t.Errorf("%d/%d: v1 %v v2 %v of %d, chi-square %.2f > 10.83", tt.v1, tt.v2, o1, o2, n, chi)
			}
		}
	}
	// Only versions that have an instance share: with v2's only pod gone
	// from the service, every connection goes to v1.
	m := serveModel([]meshlet.Canary{{Version: "v1", Weight: 10}, {Version: "v2", Weight: 90}}, meshlet.Service{Name: "web"})
	m.Services[0].Endpoints = m.Services[0].Endpoints[:1]
	if err := table.Update(m); err != nil {
		t.Fatal(err)
	}
	for range 100 {
		if p := d.Outbound(pods["a"], src, vip); p.Refused != nil || p.Targets[0].Addr.Addr().String() != pB {
			t.Fatalf("plan %+v, want v1's pod", p)
		}
	}
	// No instance of a weighted version: refused.
	m = serveModel([]meshlet.Canary{{Version: "v1", Weight: 0}, {Version: "v2", Weight: 100}}, meshlet.Service{Name: "web"})
	m.Services[0].Endpoints = m.Services[0].Endpoints[:1]
	if err := table.Update(m); err != nil {
		t.Fatal(err)
	}
	if p := d.Outbound(pods["a"], src, vip); p.Refused == nil || p.Refused.Reason != metrics.ReasonNoEndpoints {
		t.Fatalf("plan %+v, want refused: no instance of a weighted version", p)
	}
}

// TestMaxConnAndIdle: maxConn N admits N connections to a pod, refuses
// the next with max_conn, and admits again once one ended; the service's
// idleTimeout comes with every admission.
func TestMaxConnAndIdle(t *testing.T) {
	d, table, pods := policyWorld(t, Enforce)
	if err := table.Update(serveModel(nil, meshlet.Service{Name: "web", MaxConn: 3, IdleTimeout: "250ms"})); err != nil {
		t.Fatal(err)
	}
	arrive := func() Admission {
		return d.Admit(Arrival{From: FromLocal, SrcPod: pods["a"], Src: ap(pA + ":1"), Dst: ap(pB + ":8080")})
	}
	var held []Admission
	for i := range 3 {
		adm := arrive()
		if adm.Refused != nil {
			t.Fatalf("connection %d refused: %v", i+1, adm.Refused)
		}
		if adm.IdleTimeout != 250*time.Millisecond {
			t.Errorf("idle timeout %v, want 250ms", adm.IdleTimeout)
		}
		held = append(held, adm)
	}
	if adm := arrive(); adm.Refused == nil || adm.Refused.Reason != metrics.ReasonMaxConn {
		t.Fatalf("fourth connection: %+v, want max_conn", adm.Refused)
	}
	// Other pods' connections do not count: from n2 to the same pod is
	// the same count, the pod's.
	if adm := d.Admit(Arrival{From: FromPeer, Peer: "n2", Src: ap(pR + ":1"), Dst: ap(pB + ":8080")}); adm.Refused == nil {
		t.Error("a peer's connection got past a full pod")
	}
	if n := d.InUse("default/b", "web"); n != 3 {
		t.Errorf("in use %d, want 3", n)
	}
	held[0].Ticket.Done()
	adm := arrive()
	if adm.Refused != nil {
		t.Fatalf("after one ended: %v", adm.Refused)
	}
	adm.Ticket.Done()
	for _, h := range held[1:] {
		h.Ticket.Done()
	}
	if n := d.InUse("default/b", "web"); n != 0 {
		t.Errorf("in use %d after every Done, want 0", n)
	}
}
