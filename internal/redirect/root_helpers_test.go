package redirect

import (
	"bytes"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/containernetworking/plugins/pkg/ns"
)

// inNS runs f on a thread in n.
func inNS(t *testing.T, n ns.NetNS, f func() error) error {
	t.Helper()
	return n.Do(func(ns.NetNS) error { return f() })
}

// sh runs a command inside n (the child inherits the locked thread's netns)
// and returns its stdout; it fails the test on error.
func sh(t *testing.T, n ns.NetNS, name string, args ...string) string {
	t.Helper()
	out, err := shErr(n, name, args...)
	if err != nil {
		t.Fatalf("%s %s: %v", name, strings.Join(args, " "), err)
	}
	return out
}

func shErr(n ns.NetNS, name string, args ...string) (string, error) {
	var out string
	err := n.Do(func(ns.NetNS) error {
		var stderr bytes.Buffer
		cmd := exec.Command(name, args...)
		cmd.Stderr = &stderr
		b, err := cmd.Output()
		out = string(b)
		if err != nil {
			return &cmdError{err, stderr.String()}
		}
		return nil
	})
	return out, err
}

type cmdError struct {
	err    error
	stderr string
}

func (e *cmdError) Error() string { return e.err.Error() + ": " + e.stderr }

// backendCase is one backend under test, with the binaries to inspect and
// tamper with what it wrote.
type backendCase struct {
	name   string
	mode   Mode
	flavor Flavor
}

var backendCases = []backendCase{
	{"iptables-nft", ModeIPTables, FlavorNFT},
	{"iptables-legacy", ModeIPTables, FlavorLegacy},
	{"nftables", ModeNFTables, ""},
}

func (c backendCase) new(t *testing.T) Backend {
	t.Helper()
	opts := []Option{WithHost(Detection{})}
	if c.flavor != "" {
		opts = append(opts, WithIPTablesFlavor(c.flavor))
	}
	b, err := New(c.mode, opts...)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func (c backendCase) bin(v6 bool, suffix string) string {
	b := "iptables"
	if v6 {
		b = "ip6tables"
	}
	return b + "-" + string(c.flavor) + suffix
}

// dump returns everything the netns's ruleset of this backend's kind lists
// (both families for iptables), and its ip rules and routes, for
// before/after comparisons.
func (c backendCase) dump(t *testing.T, n ns.NetNS) string {
	t.Helper()
	if c.mode == ModeNFTables {
		return sh(t, n, "nft", "list", "ruleset") + routingDump(t, n)
	}
	return dropComments(sh(t, n, c.bin(false, "-save"))) + dropComments(sh(t, n, c.bin(true, "-save"))) + routingDump(t, n)
}

// ours renders the netns's rules of ours in the format of the golden files.
func (c backendCase) ours(t *testing.T, n ns.NetNS, s Spec) string {
	t.Helper()
	if c.mode == ModeNFTables {
		return sh(t, n, "nft", "list", "table", "inet", "meshless")
	}
	var b strings.Builder
	for _, v6 := range []bool{false, true} {
		for _, table := range iptTables {
			lines := ourSaveLines(sh(t, n, c.bin(v6, "-save"), "-t", table))
			enabled := (v6 && s.IPv6) || (!v6 && s.IPv4)
			if !enabled {
				if len(lines) > 0 {
					t.Errorf("%s -t %s: rules of ours in a disabled family: %q", famName(v6), table, lines)
				}
				continue
			}
			b.WriteString("# " + famName(v6) + " -t " + table + "\n*" + table + "\n")
			for _, l := range lines {
				b.WriteString(l + "\n")
			}
			b.WriteString("COMMIT\n")
		}
	}
	return b.String()
}

// ourRoutes lists the netns's ip rules and routes of ours (tagged with our
// protocol) in the format of RenderRoutes and its golden files.
func ourRoutes(t *testing.T, n ns.NetNS, s Spec) string {
	t.Helper()
	tag := " proto " + strconv.Itoa(routeProto)
	var b strings.Builder
	for _, v6 := range []bool{false, true} {
		fam := "-4"
		if v6 {
			fam = "-6"
		}
		var rules []string
		for _, l := range strings.Split(sh(t, n, "ip", fam, "rule", "show"), "\n") {
			if strings.HasSuffix(l, tag) || strings.Contains(l, tag+" ") {
				rules = append(rules, l)
			}
		}
		routes := strings.TrimSpace(sh(t, n, "ip", fam, "route", "show", "table", "all", "proto", strconv.Itoa(routeProto)))
		enabled := (v6 && s.IPv6) || (!v6 && s.IPv4)
		if !enabled {
			if len(rules) > 0 || routes != "" {
				t.Errorf("ip %s: rules or routes of ours in a disabled family: %q %q", fam, rules, routes)
			}
			continue
		}
		b.WriteString("# ip " + fam + " rule show\n")
		for _, l := range rules {
			b.WriteString(l + "\n")
		}
		b.WriteString("# ip " + fam + " route show table all proto " + strconv.Itoa(routeProto) + "\n")
		if routes != "" {
			b.WriteString(routes + "\n")
		}
	}
	return b.String()
}

// routingDump lists every ip rule and route of the netns, both families.
func routingDump(t *testing.T, n ns.NetNS) string {
	t.Helper()
	var b strings.Builder
	for _, fam := range []string{"-4", "-6"} {
		b.WriteString(sh(t, n, "ip", fam, "rule", "show"))
		b.WriteString(sh(t, n, "ip", fam, "route", "show", "table", "all"))
	}
	return b.String()
}

// ourSaveLines picks our lines out of iptables-save output, ordered as the
// golden files are: declarations, jumps, then each chain's rules in their
// listed order (the save order of chains differs between flavors).
func ourSaveLines(save string) []string {
	rank := func(l string) int {
		for i, p := range []string{":", "-A OUTPUT ", "-A PREROUTING ", "-A " + chainOut + " ", "-A " + chainIn + " "} {
			if strings.HasPrefix(l, p) {
				return i
			}
		}
		return 9
	}
	var out []string
	for _, l := range strings.Split(save, "\n") {
		if strings.Contains(l, "MESHLESS_") {
			out = append(out, l)
		}
	}
	slices.SortStableFunc(out, func(a, b string) int {
		if ra, rb := rank(a), rank(b); ra != rb || ra != 0 {
			return ra - rb
		}
		return strings.Compare(a, b)
	})
	return out
}

func dropComments(s string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if !strings.HasPrefix(l, "#") {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
