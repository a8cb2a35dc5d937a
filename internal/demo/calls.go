package demo

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/meshless/meshless/daemon/cniapi"
	"github.com/meshless/meshless/daemon/meshlet"
	"github.com/meshless/meshless/daemon/native"
	"github.com/meshless/meshless/internal/lab"
)

// row is one line of the summary.
type row struct {
	call     call
	path     string
	answered string
	latency  string
	races    string
	// unexpected is set when the daemons took another path than the
	// demo expects, which makes the demo fail.
	unexpected bool
}

var paths = []string{"local", "uds", "remote", "passthrough"}

// startServers runs demo-server, unmodified, in every pod.
func startServers(ctx context.Context, l *lab.Lab, binDir string) ([]*exec.Cmd, error) {
	bin, err := binPath(binDir, "demo-server")
	if err != nil {
		return nil, err
	}
	var cmds []*exec.Cmd
	for _, p := range l.Pods() {
		cmd := exec.CommandContext(ctx, bin, "--listen", fmt.Sprintf(":%d", lab.ServiceTargetPort), "--name", p.Ref)
		if err := l.Start(p.Ref, cmd); err != nil {
			stopAll(cmds)
			return nil, fmt.Errorf("start demo-server in %s: %w", p.Ref, err)
		}
		cmds = append(cmds, cmd)
	}
	return cmds, nil
}

// startNative makes n1/p3 and n2/p3 servers of Meshlet hello (services
// hello and hello-far, served on their /meshlet/server/<service> by
// demo-server) and n1/p2 a client that declares both, and waits until the
// daemons know.
func startNative(ctx context.Context, l *lab.Lab, binDir string) ([]*exec.Cmd, error) {
	bin, err := binPath(binDir, "demo-server")
	if err != nil {
		return nil, err
	}
	var cmds []*exec.Cmd
	for ref, service := range map[string]string{"n1/p3": "hello", "n2/p3": "hello-far"} {
		pod, err := l.Pod(ref)
		if err != nil {
			return nil, err
		}
		cmd := exec.CommandContext(ctx, bin, "--listen", "", "--native", service, "--name", ref)
		cmd.Env = append(os.Environ(), native.DirEnv+"="+pod.MeshletDir)
		if err := l.Start(ref, cmd); err != nil {
			stopAll(cmds)
			return nil, fmt.Errorf("start native demo-server in %s: %w", ref, err)
		}
		cmds = append(cmds, cmd)
		if err := l.SetPodLabels(ref, map[string]string{meshlet.LabelMeshlet: "hello"}); err != nil {
			return cmds, err
		}
	}
	err = l.SetServices([]lab.ServiceState{
		{Name: "hello", VIP: "198.18.100.61", Port: 80, TargetPort: lab.ServiceTargetPort, Endpoints: []string{"n1/p3"}},
		{Name: "hello-far", VIP: "198.18.100.62", Port: 80, TargetPort: lab.ServiceTargetPort, Endpoints: []string{"n2/p3"}},
	})
	if err == nil {
		err = l.SetPodLabels("n1/p2", map[string]string{meshlet.LabelMeshlet: "hello-client"})
	}
	if err == nil {
		err = l.SetMeshlets([]meshlet.Meshlet{
			{Namespace: lab.PodNamespace, Name: "hello", Spec: meshlet.Spec{Server: meshlet.Server{Services: []meshlet.Service{{Name: "hello"}, {Name: "hello-far"}}}}},
			{Namespace: lab.PodNamespace, Name: "hello-client", Spec: meshlet.Spec{Client: []meshlet.ClientRef{{Meshlet: "hello", Service: "hello"}, {Meshlet: "hello", Service: "hello-far"}}}},
		})
	}
	if err != nil {
		return cmds, err
	}
	return cmds, waitServices(ctx, l, 3)
}

// waitServices waits until every daemon routes n services.
func waitServices(ctx context.Context, l *lab.Lab, n int) error {
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	for _, nd := range l.Nodes() {
		for {
			st, err := cniapi.NewClient(nd.Socket).Status(ctx)
			if err == nil && len(st.Services) == n {
				break
			}
			select {
			case <-ctx.Done():
				return fmt.Errorf("daemon %s does not route the hello services: %v", nd.Name, err)
			case <-time.After(50 * time.Millisecond): // polling interval
			}
		}
	}
	return nil
}

func stopAll(cmds []*exec.Cmd) {
	for _, c := range cmds {
		c.Process.Kill()
		c.Wait()
	}
}

// dropSYN makes a pod's app unreachable for new connections, as a stuck
// instance would be: its SYNs vanish, so a plain connect hangs.
func dropSYN(ctx context.Context, l *lab.Lab, ref string) error {
	rules := fmt.Sprintf(`table inet meshless_demo {
	chain input {
		type filter hook input priority 0; policy accept;
		tcp dport %d tcp flags & (syn|ack) == syn drop
	}
}
`, lab.ServiceTargetPort)
	cmd := exec.CommandContext(ctx, "nft", "-f", "-")
	cmd.Stdin = strings.NewReader(rules)
	var b bytes.Buffer
	cmd.Stdout, cmd.Stderr = &b, &b
	if err := l.Run(ref, cmd); err != nil {
		return fmt.Errorf("nft in %s: %w: %s", ref, err, b.String())
	}
	return nil
}

// counters reads the source node's connection and race counters.
func counters(ctx context.Context, l *lab.Lab, node int) (map[string]float64, error) {
	n, err := l.Node(node)
	if err != nil {
		return nil, err
	}
	m := map[string]float64{}
	for _, p := range paths {
		v, err := n.Metric(ctx, fmt.Sprintf(`meshless_connections_total{direction="outbound",path=%q}`, p))
		if err != nil {
			return nil, err
		}
		m[p] = v
	}
	for _, r := range []string{"won", "lost", "failed"} {
		v, err := n.Metric(ctx, fmt.Sprintf(`meshless_race_total{result=%q}`, r))
		if err != nil {
			return nil, err
		}
		m["race_"+r] = v
	}
	return m, nil
}

// runCall runs demo-client in the source pod, one new connection per
// request, and reads which path the source node's daemon counted.
func runCall(ctx context.Context, l *lab.Lab, o Options, c call) (row, error) {
	node := 1
	if strings.HasPrefix(c.from, "n2/") {
		node = 2
	}
	before, err := counters(ctx, l, node)
	if err != nil {
		return row{}, err
	}
	bin, err := binPath(o.BinDir, "demo-client")
	if err != nil {
		return row{}, err
	}
	args := []string{"--n", fmt.Sprint(o.Requests), "--new-conn", "--timeout", "5s"}
	if c.native != "" {
		args = append(args, "--native", c.native)
	}
	cmd := exec.CommandContext(ctx, bin, append(args, c.url)...)
	if pod, err := l.Pod(c.from); err == nil {
		cmd.Env = append(os.Environ(), native.DirEnv+"="+pod.MeshletDir)
	}
	var b bytes.Buffer
	cmd.Stdout, cmd.Stderr = &b, &b
	if err := l.Run(c.from, cmd); err != nil {
		return row{}, fmt.Errorf("%s: demo-client: %w: %s", c.title, err, b.String())
	}
	after, err := counters(ctx, l, node)
	if err != nil {
		return row{}, err
	}
	r := row{call: c}
	var parts []string
	for _, p := range paths {
		if d := after[p] - before[p]; d > 0 {
			parts = append(parts, fmt.Sprintf("%s x%.0f", p, d))
		}
	}
	r.path = strings.Join(parts, ", ")
	if r.path == "" {
		r.path = "(not counted)"
	}
	if !strings.HasPrefix(r.path, c.expect) {
		r.path += " (expected " + c.expect + ")"
		r.unexpected = true
	}
	if won, lost := after["race_won"]-before["race_won"], after["race_lost"]-before["race_lost"]; won+lost > 0 {
		r.races = fmt.Sprintf("won %.0f, lost %.0f", won, lost)
	} else {
		r.races = "-"
	}
	for _, line := range strings.Split(b.String(), "\n") {
		if rest, ok := strings.CutPrefix(line, "instance="); ok {
			r.answered, _, _ = strings.Cut(rest, " ")
		}
		if rest, ok := strings.CutPrefix(line, "requests="); ok {
			_, r.latency, _ = strings.Cut(rest, " ")
		}
	}
	return r, nil
}

func printSummary(out io.Writer, rows []row) {
	fmt.Fprintln(out, "\nSummary (each request on a new TCP connection through the mesh):")
	tw := tabwriter.NewWriter(out, 2, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "CALL\tDAEMON PATH\tANSWERED BY\tRACES\tLATENCY")
	for _, r := range rows {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", r.call.title, r.path, r.answered, r.races, r.latency)
	}
	tw.Flush()
	fmt.Fprintln(out, "\nDAEMON PATH comes from the source node's meshless_connections_total{direction=\"outbound\",path}.")
}
