package lab

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"text/tabwriter"
	"time"
)

// NodeStatus is one node as Status finds it.
type NodeStatus struct {
	Node
	// NetnsPresent is whether the node's netns exists.
	NetnsPresent bool
	// DaemonAlive is whether the recorded PID is this node's meshlessd.
	DaemonAlive bool
	// Health is the daemon's /readyz answer ("ready", "503 ...", or the
	// error reaching it).
	Health string
	// Ready is whether /readyz answered 200.
	Ready bool
}

// PodStatus is one pod as Status finds it.
type PodStatus struct {
	Pod
	// NetnsPresent is whether the pod's netns exists.
	NetnsPresent bool
}

// Status is the lab as it is now.
type Status struct {
	Name, Dir, Underlay string
	// Complete is whether Up finished.
	Complete bool
	Nodes    []NodeStatus
	Pods     []PodStatus
	Service  *ServiceState
}

// Status checks every node's netns, daemon process and /readyz (from
// inside the node's netns) and every pod's netns.
func (l *Lab) Status(ctx context.Context) Status {
	l.mu.Lock()
	st := l.st
	l.mu.Unlock()
	out := Status{Name: st.Name, Dir: st.Dir, Underlay: st.Underlay, Complete: st.Ready, Service: st.Service}
	for _, n := range st.Nodes {
		ns := NodeStatus{Node: n.public(), NetnsPresent: netnsExists(n.Netns), DaemonAlive: isLabDaemon(n.PID, n)}
		switch {
		case !ns.NetnsPresent:
			ns.Health = "node netns missing"
		default:
			rctx, cancel := context.WithTimeout(ctx, 2*time.Second)
			code, body, err := httpGet(rctx, n.Netns, n.AdminAddr, "/readyz")
			cancel()
			switch {
			case err != nil:
				ns.Health = "unreachable: " + err.Error()
			case code == http.StatusOK:
				ns.Health, ns.Ready = "ready", true
			default:
				ns.Health = fmt.Sprintf("%d %s", code, firstLine(string(body)))
			}
		}
		out.Nodes = append(out.Nodes, ns)
		for _, p := range n.Pods {
			out.Pods = append(out.Pods, PodStatus{Pod: p.public(), NetnsPresent: netnsExists(p.Netns)})
		}
	}
	return out
}

// Healthy reports whether the lab is complete, every netns exists and
// every daemon is alive and ready.
func (s Status) Healthy() bool {
	if !s.Complete {
		return false
	}
	for _, n := range s.Nodes {
		if !n.NetnsPresent || !n.DaemonAlive || !n.Ready {
			return false
		}
	}
	for _, p := range s.Pods {
		if !p.NetnsPresent || !p.IP.IsValid() {
			return false
		}
	}
	return true
}

// Print writes the status as tables.
func (s Status) Print(w io.Writer) error {
	state := "up"
	if !s.Complete {
		state = "incomplete (lab up did not finish)"
	}
	fmt.Fprintf(w, "lab %s: %s, dir %s, underlay netns %s\n\n", s.Name, state, s.Dir, s.Underlay)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NODE\tNETNS\tADDRESS\tPOD CIDR\tDAEMON PID\tALIVE\tHEALTH")
	for _, n := range s.Nodes {
		netns := n.Netns
		if !n.NetnsPresent {
			netns += " (missing)"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%s\t%s\n", n.Name, netns, n.Address, n.PodCIDR, n.PID, yesNo(n.DaemonAlive), n.Health)
	}
	fmt.Fprintln(tw)
	fmt.Fprintln(tw, "POD\tNETNS\tIP\tK8S NAME\tCONTAINER ID")
	for _, p := range s.Pods {
		netns := p.Netns
		if !p.NetnsPresent {
			netns += " (missing)"
		}
		ip := "-"
		if p.IP.IsValid() {
			ip = p.IP.String()
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\tdefault/%s\t%s\n", p.Ref, netns, ip, p.Name, p.ContainerID)
	}
	if err := tw.Flush(); err != nil {
		return fmt.Errorf("print status: %w", err)
	}
	if svc := s.Service; svc != nil {
		fmt.Fprintf(w, "\nservice %s/%s: %s:%d -> targetPort %d on %s\n", svc.Namespace, svc.Name,
			svc.VIP, svc.Port, svc.TargetPort, strings.Join(svc.Endpoints, ", "))
	}
	return nil
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

func firstLine(s string) string {
	s, _, _ = strings.Cut(strings.TrimSpace(s), "\n")
	return s
}
