package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/meshless/meshless/daemon/cniapi"
	"github.com/meshless/meshless/internal/wellknown"
)

// runStatus prints the daemon's readiness and its registered pods. It
// fails when the daemon cannot be reached on its socket.
func runStatus(args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("status", flag.ContinueOnError)
	socket := fs.String("socket", wellknown.DaemonSocket, "daemon's unix socket")
	adminAddr := fs.String("admin-addr", fmt.Sprintf("127.0.0.1:%d", wellknown.AdminPort), "daemon's admin address (empty: skip)")
	timeout := fs.Duration("timeout", 5*time.Second, "time allowed for the daemon to answer")
	if err := fs.Parse(args); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()

	c := cniapi.NewClient(*socket)
	pods, err := c.List(ctx)
	if errors.Is(err, cniapi.ErrUnreachable) {
		return fmt.Errorf("daemon not reachable on %s (is meshlessd running?): %w", *socket, err)
	}
	if err != nil {
		return fmt.Errorf("list pods: %w", err)
	}
	ready := "ready"
	if err := c.Ready(ctx); err != nil {
		ready = "not ready: " + err.Error()
	}
	fmt.Fprintf(stdout, "daemon:  %s (socket %s)\n", ready, *socket)
	if *adminAddr != "" {
		fmt.Fprintf(stdout, "admin:   %s (%s)\n", adminReady(ctx, *adminAddr), *adminAddr)
	}
	st, stErr := c.Status(ctx)
	if stErr == nil {
		fmt.Fprintf(stdout, "node:    %s (tunnel %s, inbound policy %s, access policy %s)\n", st.Node, orDash(st.TunnelAddr), st.InboundPolicy, orDash(st.AccessPolicy))
		if st.Identity != "" {
			fmt.Fprintf(stdout, "identity: %s (expires %s)\n", st.Identity, st.IdentityExpires.Format(time.RFC3339))
		} else {
			fmt.Fprintf(stdout, "identity: none (no TLS material: cross-node connections are refused)\n")
		}
		updated := "never"
		if !st.RoutesUpdated.IsZero() {
			updated = st.RoutesUpdated.Format(time.RFC3339)
		}
		fmt.Fprintf(stdout, "routes:  %s, %d nodes, %d services, updated %s\n", st.Discovery, len(st.Nodes), len(st.Services), updated)
		if st.DiscoveryError != "" {
			fmt.Fprintf(stdout, "error:   %s (since %s; last good routes kept)\n", st.DiscoveryError, st.DiscoveryErrorAt.Format(time.RFC3339))
		}
	} else {
		fmt.Fprintf(stdout, "routes:  unknown: %v\n", stErr)
	}
	fmt.Fprintf(stdout, "pods:    %d\n", len(pods))
	if len(pods) > 0 {
		if err := printPods(stdout, pods); err != nil {
			return err
		}
	}
	if stErr == nil {
		if err := printPolicies(stdout, st.Policies); err != nil {
			return err
		}
		return printRoutes(stdout, st)
	}
	return nil
}

// printPolicies prints each pod's identity and what its Meshlet allows.
func printPolicies(stdout io.Writer, ps []cniapi.PodPolicy) error {
	if len(ps) == 0 {
		return nil
	}
	fmt.Fprintln(stdout)
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "POD\tIDENTITY\tMESHLET\tSERVES\tALLOWED FROM\tMAY CALL")
	for _, p := range ps {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", p.Pod, orDash(p.Identity), orDash(p.Meshlet),
			orDash(strings.Join(p.Serves, ",")), orDash(strings.Join(p.AllowedFrom, ",")), orDash(strings.Join(p.MayCall, ",")))
	}
	return tw.Flush()
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// printRoutes prints the routing table's nodes and services.
func printRoutes(stdout io.Writer, st *cniapi.DaemonStatus) error {
	if len(st.Nodes) > 0 {
		fmt.Fprintln(stdout)
		tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "NODE\tTUNNEL\tPOD CIDRS\tSELF")
		for _, n := range st.Nodes {
			self := ""
			if n.Self {
				self = "yes"
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", n.Name, n.Tunnel, strings.Join(n.PodCIDRs, ","), self)
		}
		if err := tw.Flush(); err != nil {
			return err
		}
	}
	if len(st.Services) > 0 {
		fmt.Fprintln(stdout)
		tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "SERVICE\tVIPS\tPORTS\tENDPOINTS")
		for _, s := range st.Services {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", s.Name, strings.Join(s.VIPs, ","), strings.Join(s.Ports, ","), strings.Join(s.Endpoints, ","))
		}
		return tw.Flush()
	}
	return nil
}

// printPods prints the registered pods.
func printPods(stdout io.Writer, pods []cniapi.PodStatus) error {
	fmt.Fprintln(stdout)
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "POD\tCONTAINER\tIF\tIPS\tNETNS\tLISTENERS")
	for _, p := range pods {
		name := p.Namespace + "/" + p.Name
		if p.Name == "" {
			name = "-"
		}
		ips := make([]string, len(p.IPs))
		for i, ip := range p.IPs {
			ips[i] = ip.String()
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", name, shortID(p.ContainerID), p.IfName,
			strings.Join(ips, ","), p.Netns, strings.Join(p.Listeners, ","))
	}
	return tw.Flush()
}

// adminReady asks /readyz; the answer's first line says why when not ready.
func adminReady(ctx context.Context, addr string) string {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/readyz", nil)
	if err != nil {
		return "error: " + err.Error()
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "unreachable: " + err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	return strings.TrimSpace(string(b))
}

func shortID(id string) string {
	if len(id) > 12 {
		return id[:12]
	}
	return id
}
