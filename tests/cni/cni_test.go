// Package cni_test drives the real CNI chain (reference bridge + host-local,
// then meshless-cni) through libcni, as containerd does, against a real
// meshlessd, in real network namespaces.
package cni_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/plugins/pkg/ns"

	"github.com/meshless/meshless/daemon/cniapi"
	"github.com/meshless/meshless/internal/nstest"
	"github.com/meshless/meshless/tests/harness"
)

var cniVersions = []string{"0.4.0", "1.0.0", "1.1.0"}

// lab is one node netns with a daemon and a conflist.
type lab struct {
	t      *testing.T
	bins   harness.Bins
	node   ns.NetNS
	daemon *harness.Daemon
	dir    string
	socket string
	n      int
}

func newLab(t *testing.T, startDaemon bool) *lab {
	t.Helper()
	nstest.RequireRoot(t)
	l := &lab{t: t, bins: harness.Binaries(t), node: nstest.New(t), dir: t.TempDir()}
	l.socket = filepath.Join(l.dir, "run", "cni.sock")
	if startDaemon {
		l.startDaemon()
	}
	return l
}

func (l *lab) startDaemon() {
	l.daemon = harness.StartDaemon(l.t, l.bins, harness.DaemonOptions{Dir: l.dir})
	if l.daemon.Socket != l.socket {
		l.t.Fatalf("daemon socket %s, lab expects %s", l.daemon.Socket, l.socket)
	}
}

// chain returns a conflist for this lab; extra keys go into the
// meshless-cni entry.
func (l *lab) chain(version string, extra map[string]any) *harness.Chain {
	m := map[string]any{
		"daemonSocket": l.socket,
		"logFile":      filepath.Join(l.dir, "cni.log"),
		"capabilities": map[string]bool{"io.kubernetes.cri.pod-annotations": true},
	}
	for k, v := range extra {
		m[k] = v
	}
	return harness.NewChain(l.t, l.bins, l.node, harness.ChainOptions{
		CNIVersion: version,
		Bridge:     "mlt0",
		Subnet:     "198.19.1.0/24",
		Meshless:   m,
		StateDir:   l.dir,
	})
}

// pod makes a pod netns, as the runtime does before ADD.
func (l *lab) pod() harness.Pod {
	l.n++
	p := nstest.New(l.t)
	return harness.Pod{
		ContainerID: fmt.Sprintf("c%08d", l.n),
		Netns:       p.Path(),
		Namespace:   "default",
		Name:        fmt.Sprintf("pod-%d", l.n),
		UID:         fmt.Sprintf("uid-%d", l.n),
	}
}

func (l *lab) client() *cniapi.Client { return cniapi.NewClient(l.socket) }

func (l *lab) registered(p harness.Pod) bool {
	l.t.Helper()
	_, err := l.client().Get(context.Background(), cniapi.Attachment{ContainerID: p.ContainerID, IfName: "eth0"})
	if err == cniapi.ErrNotFound {
		return false
	}
	if err != nil {
		l.t.Fatalf("get registration: %v", err)
	}
	return true
}

// rules returns the netfilter rules of a netns as text: iptables-save for
// both binaries and families, and the nftables ruleset. Only rules count:
// empty tables and base chains that iptables-nft or a legacy table module
// leave behind are dropped, as are counters and comments, so two reads of
// the same rules compare equal.
func rules(t *testing.T, netns string) string {
	t.Helper()
	var b strings.Builder
	for _, cmd := range [][]string{
		{"iptables-nft-save"}, {"ip6tables-nft-save"}, {"iptables-legacy-save"}, {"ip6tables-legacy-save"},
		{"nft", "list", "ruleset"},
	} {
		args := append([]string{"netns", "exec", filepath.Base(netns)}, cmd...)
		out, err := exec.Command("ip", args...).CombinedOutput()
		if err != nil {
			t.Fatalf("%v: %v\n%s", cmd, err, out)
		}
		for _, line := range strings.Split(string(out), "\n") {
			l := strings.TrimSpace(line)
			switch {
			case l == "", l == "}", l == "COMMIT",
				strings.HasPrefix(l, "#"), strings.HasPrefix(l, "*"),
				strings.HasPrefix(l, "table "), strings.HasPrefix(l, "type "):
				continue
			case strings.HasPrefix(l, ":"), strings.HasPrefix(l, "chain "):
				// A chain is state only when something uses it; user
				// chains show up in the rules that jump to them.
				if !strings.HasPrefix(l, ":MESHLESS") && !strings.Contains(l, "chain output") && !strings.Contains(l, "chain prerouting") {
					continue
				}
			}
			b.WriteString(cmd[0] + ": " + l + "\n")
		}
	}
	return b.String()
}

func hasMeshlessRules(s string) bool {
	return strings.Contains(s, "MESHLESS") || strings.Contains(s, "redirect to :15001")
}

// listening returns the TCP listening sockets in netns as "addr:port"
// lines (ss -Htln).
func listening(t *testing.T, netns string) string {
	t.Helper()
	out, err := exec.Command("ip", "netns", "exec", filepath.Base(netns), "ss", "-Htln").CombinedOutput()
	if err != nil {
		t.Fatalf("ss: %v\n%s", err, out)
	}
	return string(out)
}

// podIP returns the pod's IPv4 address from an ADD result.
func podIP(t *testing.T, res types.Result) string {
	t.Helper()
	r, err := current.NewResultFromResult(res)
	if err != nil {
		t.Fatalf("convert result: %v", err)
	}
	for _, ip := range r.IPs {
		if ip.Address.IP.To4() != nil {
			return ip.Address.IP.String()
		}
	}
	t.Fatalf("no IPv4 in result %v", r)
	return ""
}

func TestMain(m *testing.M) {
	os.Exit(m.Run())
}

func containsPort(rules, port string) bool { return strings.Contains(rules, port) }
