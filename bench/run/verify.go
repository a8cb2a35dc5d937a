package run

// The client pod: benchapp runs there, for the measurements and for the
// probe that verifies a set-up is in effect, checked against the daemons'
// connection counters.

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"

	"github.com/meshless/meshless/bench/report"
)

func (b *bench) target(place string) string {
	if b.setup == report.Native {
		return nativeTarget(place)
	}
	ref := sameServer
	if place == report.Cross {
		ref = crossSrv
	}
	p, _ := b.l.Pod(ref)
	return net.JoinHostPort(p.IP.String(), fmt.Sprint(appPort))
}

// client runs benchapp in the client pod and returns its stdout.
func (b *bench) client(ctx context.Context, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, filepath.Join(b.cfg.BinDir, "benchapp"), args...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if p, err := b.l.Pod(client); err == nil {
		cmd.Env = b.nativeEnv(p)
	}
	if err := b.l.Run(client, cmd); err != nil {
		return nil, fmt.Errorf("benchapp %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(errb.String()))
	}
	return out.Bytes(), nil
}

// connCounts returns every node's meshless_connections_total, keyed by
// node name and labels, and meshless_native_handoffs_total, keyed by node
// name and "handoffs".
func (b *bench) connCounts(ctx context.Context) (map[string]float64, error) {
	out := map[string]float64{}
	for _, n := range b.l.Nodes() {
		body, err := n.Metrics(ctx)
		if err != nil {
			return nil, err
		}
		for _, line := range strings.Split(body, "\n") {
			i := strings.LastIndexByte(line, ' ')
			if i < 0 {
				continue
			}
			var key string
			switch {
			case strings.HasPrefix(line, "meshless_connections_total{"):
				key = n.Name + " " + line[len("meshless_connections_total"):i]
			case strings.HasPrefix(line, "meshless_native_handoffs_total "):
				key = n.Name + " handoffs"
			default:
				continue
			}
			var v float64
			fmt.Sscan(line[i+1:], &v)
			out[key] += v
		}
	}
	return out, nil
}

// verify sends one connection to the server at place and records which
// daemon paths counted it; it fails when the set-up is not in effect.
func (b *bench) verify(ctx context.Context, place string) error {
	before, err := b.connCounts(ctx)
	if err != nil {
		return err
	}
	if _, err := b.client(ctx, "conn", "-addr", b.target(place), "-count", "1"); err != nil {
		return fmt.Errorf("probe %s %s: %w", b.setup, place, err)
	}
	after, err := b.connCounts(ctx)
	if err != nil {
		return err
	}
	var got []string
	for k, v := range after {
		if d := v - before[k]; d > 0 {
			got = append(got, fmt.Sprintf("%s +%.0f", k, d))
		}
	}
	slices.Sort(got)
	desc := strings.Join(got, ", ")
	if desc == "" {
		desc = "no daemon connection"
	}
	ok := false
	switch b.setup {
	case report.Direct, report.Sidecar:
		ok = len(got) == 0
	case report.Meshless, report.Sockmap:
		ok = strings.Contains(desc, `path="local"`) || strings.Contains(desc, `path="remote"`)
		ok = ok && !strings.Contains(desc, `path="uds"`)
	case report.UDS:
		ok = strings.Contains(desc, `path="uds"`)
	case report.Native:
		// Same node: handed over (the daemon counts it as a uds
		// connection, then leaves). Across nodes: relayed through the
		// tunnel to the far server's socket.
		if place == report.Same {
			ok = strings.Contains(desc, "n1 handoffs +1")
		} else {
			ok = strings.Contains(desc, `n1 {direction="outbound",path="remote"}`) &&
				strings.Contains(desc, `n2 {direction="inbound",path="uds"}`)
		}
	}
	if b.setup == report.Sidecar {
		desc += "; HAProxy redirect rules in place"
	}
	b.res.Verified[b.setup+" "+place] = desc
	if !ok {
		return fmt.Errorf("set-up %s %s not in effect: %s", b.setup, place, desc)
	}
	return nil
}
