package redirect

import (
	"errors"
	"fmt"
	"os/exec"
	"slices"
	"strconv"
	"strings"

	"github.com/coreos/go-iptables/iptables"
)

// Chains of the iptables backend, in table nat of both families.
const (
	iptTable   = "nat"
	chainOut   = "MESHLESS_OUTPUT"
	chainIn    = "MESHLESS_PREROUTING"
	hookOut    = "OUTPUT"
	hookIn     = "PREROUTING"
	maxJumpDel = 32 // bound on deleting duplicated jumps, against a loop
)

// iptRule is one rule: its chain and its arguments exactly as
// `iptables -S` prints them (e.g. "-p tcp -m tcp --dport 15008"), so that
// Check can compare listings textually and Apply can skip a no-op.
type iptRule struct {
	Chain string
	Args  []string
}

func (r iptRule) String() string { return strings.Join(r.Args, " ") }

// iptJumps are the rules in the built-in chains that send TCP to ours.
var iptJumps = []iptRule{
	{hookOut, []string{"-p", "tcp", "-j", chainOut}},
	{hookIn, []string{"-p", "tcp", "-j", chainIn}},
}

// iptRules returns the rules of our chains for one family (v6 false: IPv4)
// of a normalised spec, in order: the pure core of the iptables backend.
func iptRules(s Spec, v6 bool) []iptRule {
	ret := func(chain string, args ...string) iptRule {
		return iptRule{chain, append(args, "-j", "RETURN")}
	}
	mark := fmt.Sprintf("%#x/%#x", s.Mark, s.MarkMask)
	if s.MarkMask == 0xffffffff {
		mark = fmt.Sprintf("%#x", s.Mark) // how iptables -S prints a full mask
	}
	dports := func(chain string, extra []uint16) []iptRule {
		var out []iptRule
		for _, p := range append(slices.Clone(alwaysExcludedPorts), extra...) {
			out = append(out, ret(chain, "-p", "tcp", "-m", "tcp", "--dport", strconv.Itoa(int(p))))
		}
		return out
	}
	loop := "127.0.0.0/8"
	if v6 {
		loop = "::1/128"
	}

	var out []iptRule
	out = append(out,
		ret(chainOut, "-m", "mark", "--mark", mark),
		ret(chainOut, "-o", "lo"),
		ret(chainOut, "-d", loop))
	out = append(out, dports(chainOut, s.ExcludeOutboundPorts)...)
	for _, p := range cidrsOf(s.ExcludeOutboundCIDRs, v6) {
		if p.Bits() == 0 {
			out = append(out, ret(chainOut)) // iptables -S omits "-d 0.0.0.0/0"
			continue
		}
		out = append(out, ret(chainOut, "-d", p.String()))
	}
	out = append(out, iptRule{chainOut, []string{"-p", "tcp", "-j", "REDIRECT", "--to-ports", strconv.Itoa(int(s.OutboundPort))}})

	out = append(out,
		ret(chainIn, "-i", "lo"),
		ret(chainIn, "-m", "mark", "--mark", mark))
	out = append(out, dports(chainIn, s.ExcludeInboundPorts)...)
	out = append(out, iptRule{chainIn, []string{"-p", "tcp", "-j", "REDIRECT", "--to-ports", strconv.Itoa(int(s.InboundPort))}})
	return out
}

// renderIPT returns the iptables-save lines of one family: our chain
// declarations, the jumps, then our chains' rules.
func renderIPT(s Spec, v6 bool) []string {
	lines := []string{":" + chainOut + " - [0:0]", ":" + chainIn + " - [0:0]"}
	for _, r := range append(slices.Clone(iptJumps), iptRules(s, v6)...) {
		lines = append(lines, "-A "+r.Chain+" "+r.String())
	}
	return lines
}

// Flavor is the iptables implementation behind the binaries.
type Flavor string

// The flavors. They keep separate rule sets in the kernel, so rules must be
// checked and removed with the flavor that wrote them.
const (
	FlavorLegacy Flavor = "legacy" // x_tables (iptables-legacy)
	FlavorNFT    Flavor = "nft"    // nf_tables (iptables-nft)
)

// iptBackend programs rules with iptables binaries through go-iptables.
type iptBackend struct {
	host   Detection
	flavor Flavor // empty: detected per call in the current netns
	path4  string // explicit binaries (WithIPTablesPaths), else by flavor
	path6  string
}

func (b *iptBackend) Name() string { return string(ModeIPTables) }

// resolve returns the flavor to use in the current netns.
func (b *iptBackend) resolve() (Flavor, error) {
	if b.flavor != "" {
		return b.flavor, nil
	}
	pod, err := Detect()
	if err != nil {
		return "", err
	}
	_, f := choose(ModeIPTables, b.host, pod)
	return f, nil
}

// tool returns go-iptables for one family and flavor.
func (b *iptBackend) tool(f Flavor, v6 bool) (*iptables.IPTables, error) {
	proto, path := iptables.ProtocolIPv4, b.path4
	if v6 {
		proto, path = iptables.ProtocolIPv6, b.path6
	}
	if path == "" {
		path = binaryFor(f, v6)
	}
	ipt, err := iptables.New(iptables.IPFamily(proto), iptables.Path(path))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return ipt, nil
}

// binaryFor names the binary of a flavor: iptables-legacy or iptables-nft
// when installed (Debian, Ubuntu, Fedora ship both names), else plain
// iptables, which then is whatever flavor the distribution links.
func binaryFor(f Flavor, v6 bool) string {
	base := "iptables"
	if v6 {
		base = "ip6tables"
	}
	if p, err := exec.LookPath(base + "-" + string(f)); err == nil {
		return p
	}
	return base
}

func famName(v6 bool) string {
	if v6 {
		return "ip6tables"
	}
	return "iptables"
}

// Apply implements Backend. It builds our chains, fills them, and inserts
// the jumps last, so traffic is never sent into a half-filled chain on the
// first apply. Re-applying a different spec flushes and refills the live
// chains: for that short moment some packets pass unredirected (fail open,
// never a black hole). On any error it removes all of its rules.
func (b *iptBackend) Apply(spec Spec) error {
	s, err := spec.Normalize()
	if err != nil {
		return fmt.Errorf("iptables: %w", err)
	}
	f, err := b.resolve()
	if err != nil {
		return fmt.Errorf("iptables: %w", err)
	}
	if b.check(s, f) == nil {
		return nil // already exact: leave the live chains alone
	}
	if err := b.apply(s, f); err != nil {
		if rerr := b.remove(f); rerr != nil {
			err = errors.Join(err, fmt.Errorf("cleanup: %w", rerr))
		}
		return err
	}
	return nil
}

func (b *iptBackend) apply(s Spec, f Flavor) error {
	for _, v6 := range []bool{false, true} {
		enabled := (v6 && s.IPv6) || (!v6 && s.IPv4)
		if !enabled {
			// A family the spec no longer has: drop what an earlier spec
			// wrote there, so the rules match the spec exactly.
			if err := b.removeFamily(f, v6); err != nil {
				return err
			}
			continue
		}
		ipt, err := b.tool(f, v6)
		if err != nil {
			return fmt.Errorf("%s: %w", famName(v6), err)
		}
		if err := applyFamily(ipt, s, v6); err != nil {
			return fmt.Errorf("%s: %w", famName(v6), err)
		}
	}
	return nil
}

func applyFamily(ipt *iptables.IPTables, s Spec, v6 bool) error {
	for _, c := range []string{chainOut, chainIn} {
		// ClearChain creates the chain, or flushes it when it exists: a
		// rebuild, so re-applying never appends duplicates.
		if err := ipt.ClearChain(iptTable, c); err != nil {
			return fmt.Errorf("create chain %s: %w", c, err)
		}
	}
	for _, r := range iptRules(s, v6) {
		if err := ipt.Append(iptTable, r.Chain, r.Args...); err != nil {
			return fmt.Errorf("append to %s %q: %w", r.Chain, r, err)
		}
	}
	for _, j := range iptJumps {
		ok, err := ipt.Exists(iptTable, j.Chain, j.Args...)
		if err != nil {
			return fmt.Errorf("check jump in %s: %w", j.Chain, err)
		}
		if ok {
			continue
		}
		// Position 1: a NAT target ends the chain, so a foreign DNAT rule
		// ahead of ours would take the connection away from the mesh.
		if err := ipt.Insert(iptTable, j.Chain, 1, j.Args...); err != nil {
			return fmt.Errorf("insert jump in %s: %w", j.Chain, err)
		}
	}
	return nil
}

// Check implements Backend.
func (b *iptBackend) Check(spec Spec) error {
	s, err := spec.Normalize()
	if err != nil {
		return fmt.Errorf("iptables: %w", err)
	}
	f, err := b.resolve()
	if err != nil {
		return fmt.Errorf("iptables: %w", err)
	}
	return b.check(s, f)
}

func (b *iptBackend) check(s Spec, f Flavor) error {
	for _, v6 := range []bool{false, true} {
		enabled := (v6 && s.IPv6) || (!v6 && s.IPv4)
		if !enabled {
			present, err := b.ours(f, v6)
			if err != nil {
				return fmt.Errorf("%s: %w", famName(v6), err)
			}
			if present {
				return fmt.Errorf("%s: chain %s/%s present but the family is off", famName(v6), iptTable, chainOut)
			}
			continue
		}
		// Listing a missing nat table with iptables-legacy would load it:
		// a Check must not change what detection sees later.
		present, err := natTablePresent(f, v6)
		if err != nil {
			return fmt.Errorf("%s: %w", famName(v6), err)
		}
		if !present {
			return fmt.Errorf("%s: table %s missing", famName(v6), iptTable)
		}
		ipt, err := b.tool(f, v6)
		if err != nil {
			return fmt.Errorf("%s: %w", famName(v6), err)
		}
		if err := checkFamily(ipt, s, v6); err != nil {
			return fmt.Errorf("%s: %w", famName(v6), err)
		}
	}
	return nil
}

func checkFamily(ipt *iptables.IPTables, s Spec, v6 bool) error {
	want := map[string][]string{}
	for _, r := range iptRules(s, v6) {
		want[r.Chain] = append(want[r.Chain], "-A "+r.Chain+" "+r.String())
	}
	for _, c := range []string{chainOut, chainIn} {
		ok, err := ipt.ChainExists(iptTable, c)
		if err != nil {
			return fmt.Errorf("list %s/%s: %w", iptTable, c, err)
		}
		if !ok {
			return fmt.Errorf("chain %s/%s missing", iptTable, c)
		}
		got, err := ipt.List(iptTable, c)
		if err != nil {
			return fmt.Errorf("list %s/%s: %w", iptTable, c, err)
		}
		if err := diffLines(got[1:], want[c], iptTable+"/"+c, "-A "+c+" "); err != nil { // got[0] is "-N chain"
			return err
		}
	}
	for _, j := range iptJumps {
		got, err := ipt.List(iptTable, j.Chain)
		if err != nil {
			return fmt.Errorf("list %s/%s: %w", iptTable, j.Chain, err)
		}
		switch n := countLine(got, "-A "+j.Chain+" "+j.String()); {
		case n == 0:
			return fmt.Errorf("jump %q missing in %s/%s", j, iptTable, j.Chain)
		case n > 1:
			return fmt.Errorf("jump %q in %s/%s %d times", j, iptTable, j.Chain, n)
		}
	}
	return nil
}

func countLine(lines []string, l string) int {
	n := 0
	for _, x := range lines {
		if x == l {
			n++
		}
	}
	return n
}

// diffLines names the first difference between the listed rules of a chain
// and the wanted ones: a missing rule first (the most useful to an
// operator), then an unexpected one, then the order.
func diffLines(got, want []string, where, prefix string) error {
	for _, w := range want {
		if !slices.Contains(got, w) {
			return fmt.Errorf("rule %q missing in %s", strings.TrimPrefix(w, prefix), where)
		}
	}
	for _, g := range got {
		if !slices.Contains(want, g) {
			return fmt.Errorf("unexpected rule %q in %s", strings.TrimPrefix(g, prefix), where)
		}
	}
	if !slices.Equal(got, want) {
		return fmt.Errorf("rules of %s out of order or duplicated", where)
	}
	return nil
}

// Remove implements Backend. Without a fixed flavor it cleans both
// flavors, since either may hold rules from an earlier Apply.
func (b *iptBackend) Remove() error {
	if b.flavor != "" {
		return b.remove(b.flavor)
	}
	return errors.Join(b.remove(FlavorLegacy), b.remove(FlavorNFT))
}

func (b *iptBackend) remove(f Flavor) error {
	return errors.Join(b.removeFamily(f, false), b.removeFamily(f, true))
}

// ours reports whether our chains may exist for a flavor and family,
// without running the binary when the nat table is not there. That
// matters: merely listing nat with iptables-legacy loads the legacy nat
// table into the netns, which would then make detection pick legacy, and a
// netns without that table (or without the binary) has nothing of ours.
func (b *iptBackend) ours(f Flavor, v6 bool) (bool, error) {
	present, err := natTablePresent(f, v6)
	if err != nil || !present {
		return false, err
	}
	ipt, err := b.tool(f, v6)
	if err != nil {
		return false, err
	}
	for _, c := range []string{chainOut, chainIn} {
		ok, err := ipt.ChainExists(iptTable, c)
		if err != nil || ok {
			return ok, err
		}
	}
	return false, nil
}

func (b *iptBackend) removeFamily(f Flavor, v6 bool) error {
	present, err := natTablePresent(f, v6)
	if err != nil {
		return fmt.Errorf("%s: %w", famName(v6), err)
	}
	if !present {
		return nil
	}
	ipt, err := b.tool(f, v6)
	if err != nil {
		return fmt.Errorf("%s: %w", famName(v6), err)
	}
	var errs []error
	for _, j := range iptJumps {
		// Loop: a crashed older run may have left the jump twice.
		for range maxJumpDel {
			ok, err := ipt.Exists(iptTable, j.Chain, j.Args...)
			if err != nil && !isNotExist(err) {
				errs = append(errs, fmt.Errorf("check jump in %s: %w", j.Chain, err))
			}
			if !ok {
				break
			}
			if err := ipt.Delete(iptTable, j.Chain, j.Args...); err != nil {
				errs = append(errs, fmt.Errorf("delete jump in %s: %w", j.Chain, err))
				break
			}
		}
	}
	for _, c := range []string{chainOut, chainIn} {
		if err := ipt.ClearAndDeleteChain(iptTable, c); err != nil && !isNotExist(err) {
			errs = append(errs, fmt.Errorf("delete chain %s: %w", c, err))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("%s: %w", famName(v6), err)
	}
	return nil
}

func isNotExist(err error) bool {
	var e *iptables.Error
	return errors.As(err, &e) && e.IsNotExist()
}
