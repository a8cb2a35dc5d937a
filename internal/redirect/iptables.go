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

// Chains of the iptables backend: in table nat of both families the
// redirection, in table mangle the transparent-source mark handling.
const (
	iptTable   = "nat"
	mangle     = "mangle"
	chainOut   = "MESHLESS_OUTPUT" // in nat and in mangle
	chainIn    = "MESHLESS_PREROUTING"
	hookOut    = "OUTPUT"
	hookIn     = "PREROUTING"
	maxJumpDel = 32 // bound on deleting duplicated jumps, against a loop
)

// iptChain is one chain of ours.
type iptChain struct{ Table, Chain string }

func (c iptChain) String() string { return c.Table + "/" + c.Chain }

// iptTables lists the tables we write to, in the order Render prints them,
// and iptChains our chains, in creation order.
var (
	iptTables = []string{iptTable, mangle}
	iptChains = []iptChain{{iptTable, chainOut}, {iptTable, chainIn}, {mangle, chainOut}}
)

// iptRule is one rule: its table, chain and its arguments exactly as
// `iptables -S` prints them (e.g. "-p tcp -m tcp --dport 15008"), so that
// Check can compare listings textually and Apply can skip a no-op.
type iptRule struct {
	Table string
	Chain string
	Args  []string
}

func (r iptRule) String() string { return strings.Join(r.Args, " ") }

// iptJumps are the rules in the built-in chains that send TCP to ours.
var iptJumps = []iptRule{
	{iptTable, hookOut, []string{"-p", "tcp", "-j", chainOut}},
	{iptTable, hookIn, []string{"-p", "tcp", "-j", chainIn}},
	{mangle, hookOut, []string{"-p", "tcp", "-j", chainOut}},
}

// iptRules returns the rules of our chains for one family (v6 false: IPv4)
// of a normalised spec, in order: the pure core of the iptables backend.
func iptRules(s Spec, v6 bool) []iptRule {
	ret := func(chain string, args ...string) iptRule {
		return iptRule{iptTable, chain, append(args, "-j", "RETURN")}
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
	out = append(out, iptRule{iptTable, chainOut, []string{"-p", "tcp", "-j", "REDIRECT", "--to-ports", strconv.Itoa(int(s.OutboundPort))}})

	out = append(out,
		ret(chainIn, "-i", "lo"),
		ret(chainIn, "-m", "mark", "--mark", mark))
	out = append(out, dports(chainIn, s.ExcludeInboundPorts)...)
	out = append(out, iptRule{iptTable, chainIn, []string{"-p", "tcp", "-j", "REDIRECT", "--to-ports", strconv.Itoa(int(s.InboundPort))}})

	// Transparent source (see the package doc): a packet sent with the
	// bit saves it into its connection's mark; a packet of a connection
	// so marked (the app's replies) gets it back, and mangle OUTPUT then
	// routes the packet again with the new mark.
	bit := fmt.Sprintf("%#x", s.TransparentMark)
	masks := []string{"--nfmask", bit, "--ctmask", bit}
	out = append(out,
		iptRule{mangle, chainOut, append([]string{"-m", "mark", "--mark", bit + "/" + bit, "-j", "CONNMARK", "--save-mark"}, masks...)},
		iptRule{mangle, chainOut, append([]string{"-m", "connmark", "--mark", bit + "/" + bit, "-j", "CONNMARK", "--restore-mark"}, masks...)})
	return out
}

// renderIPT returns the iptables-save lines of one family and table: our
// chain declarations, the jumps, then our chains' rules.
func renderIPT(s Spec, v6 bool, table string) []string {
	var lines []string
	for _, c := range iptChains {
		if c.Table == table {
			lines = append(lines, ":"+c.Chain+" - [0:0]")
		}
	}
	for _, r := range append(slices.Clone(iptJumps), iptRules(s, v6)...) {
		if r.Table == table {
			lines = append(lines, "-A "+r.Chain+" "+r.String())
		}
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

// Apply implements Backend. It adds the ip rules and routes, builds our
// chains, fills them, and inserts the jumps last, so traffic is never sent
// into a half-filled chain on the first apply. Re-applying a different spec
// flushes and refills the live chains: for that short moment some packets
// pass unredirected (fail open, never a black hole). On any error it
// removes all of its rules, routes included.
func (b *iptBackend) Apply(spec Spec) error {
	s, err := spec.Normalize()
	if err != nil {
		return fmt.Errorf("iptables: %w", err)
	}
	f, err := b.resolve()
	if err != nil {
		return fmt.Errorf("iptables: %w", err)
	}
	iptOK, routesOK := b.check(s, f) == nil, checkRoutes(s) == nil
	if iptOK && routesOK {
		return nil // already exact: leave the live chains alone
	}
	if !routesOK {
		err = syncRoutes(s)
	}
	if err == nil && !iptOK {
		err = b.apply(s, f)
	}
	if err != nil {
		if rerr := errors.Join(b.remove(f), removeRoutes()); rerr != nil {
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
	for _, c := range iptChains {
		// ClearChain creates the chain, or flushes it when it exists: a
		// rebuild, so re-applying never appends duplicates.
		if err := ipt.ClearChain(c.Table, c.Chain); err != nil {
			return fmt.Errorf("create chain %s: %w", c, err)
		}
	}
	for _, r := range iptRules(s, v6) {
		if err := ipt.Append(r.Table, r.Chain, r.Args...); err != nil {
			return fmt.Errorf("append to %s/%s %q: %w", r.Table, r.Chain, r, err)
		}
	}
	for _, j := range iptJumps {
		ok, err := ipt.Exists(j.Table, j.Chain, j.Args...)
		if err != nil {
			return fmt.Errorf("check jump in %s/%s: %w", j.Table, j.Chain, err)
		}
		if ok {
			continue
		}
		// Position 1: a NAT target ends the chain, so a foreign DNAT rule
		// ahead of ours would take the connection away from the mesh; in
		// mangle, a foreign ACCEPT would skip the mark restore.
		if err := ipt.Insert(j.Table, j.Chain, 1, j.Args...); err != nil {
			return fmt.Errorf("insert jump in %s/%s: %w", j.Table, j.Chain, err)
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
	if err := b.check(s, f); err != nil {
		return err
	}
	return checkRoutes(s)
}

// check compares the iptables rules only (not the ip rules and routes).
func (b *iptBackend) check(s Spec, f Flavor) error {
	for _, v6 := range []bool{false, true} {
		enabled := (v6 && s.IPv6) || (!v6 && s.IPv4)
		if !enabled {
			present, err := b.ours(f, v6)
			if err != nil {
				return fmt.Errorf("%s: %w", famName(v6), err)
			}
			if present != nil {
				return fmt.Errorf("%s: chain %s present but the family is off", famName(v6), present)
			}
			continue
		}
		// Listing a missing table with iptables-legacy would load it: a
		// Check must not change what detection sees later.
		for _, t := range iptTables {
			present, err := tablePresent(f, v6, t)
			if err != nil {
				return fmt.Errorf("%s: %w", famName(v6), err)
			}
			if !present {
				return fmt.Errorf("%s: table %s missing", famName(v6), t)
			}
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
	want := map[iptChain][]string{}
	for _, r := range iptRules(s, v6) {
		c := iptChain{r.Table, r.Chain}
		want[c] = append(want[c], "-A "+r.Chain+" "+r.String())
	}
	for _, c := range iptChains {
		ok, err := ipt.ChainExists(c.Table, c.Chain)
		if err != nil {
			return fmt.Errorf("list %s: %w", c, err)
		}
		if !ok {
			return fmt.Errorf("chain %s missing", c)
		}
		got, err := ipt.List(c.Table, c.Chain)
		if err != nil {
			return fmt.Errorf("list %s: %w", c, err)
		}
		if err := diffLines(got[1:], want[c], c.String(), "-A "+c.Chain+" "); err != nil { // got[0] is "-N chain"
			return err
		}
	}
	for _, j := range iptJumps {
		got, err := ipt.List(j.Table, j.Chain)
		if err != nil {
			return fmt.Errorf("list %s/%s: %w", j.Table, j.Chain, err)
		}
		switch n := countLine(got, "-A "+j.Chain+" "+j.String()); {
		case n == 0:
			return fmt.Errorf("jump %q missing in %s/%s", j, j.Table, j.Chain)
		case n > 1:
			return fmt.Errorf("jump %q in %s/%s %d times", j, j.Table, j.Chain, n)
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

// Remove implements Backend: our chains and jumps, and our ip rules and
// routes. Without a fixed flavor it cleans both flavors, since either may
// hold rules from an earlier Apply. Without an iptables binary, rules of
// the nft flavor are removed through netlink (iptnft_netlink.go).
func (b *iptBackend) Remove() error {
	var err error
	if b.flavor != "" {
		err = b.remove(b.flavor)
	} else {
		err = errors.Join(b.remove(FlavorLegacy), b.remove(FlavorNFT))
	}
	if err != nil {
		// The routes stay with the rules that use them: a failed Remove
		// leaves the pod meshed as it was, not half of it.
		return err
	}
	return removeRoutes()
}

func (b *iptBackend) remove(f Flavor) error {
	return errors.Join(b.removeFamily(f, false), b.removeFamily(f, true))
}

// ours returns one of our chains that exists for a flavor and family, or
// nil, without running the binary when its table is not there. That
// matters: merely listing a table with iptables-legacy loads it into the
// netns, which would then make detection pick legacy, and a netns without
// that table (or without the binary) has nothing of ours.
func (b *iptBackend) ours(f Flavor, v6 bool) (*iptChain, error) {
	var ipt *iptables.IPTables
	for _, c := range iptChains {
		present, err := tablePresent(f, v6, c.Table)
		if err != nil {
			return nil, err
		}
		if !present {
			continue
		}
		if ipt == nil {
			if ipt, err = b.tool(f, v6); err != nil {
				return nil, err
			}
		}
		ok, err := ipt.ChainExists(c.Table, c.Chain)
		if err != nil {
			return nil, err
		}
		if ok {
			return &c, nil
		}
	}
	return nil, nil
}

func (b *iptBackend) removeFamily(f Flavor, v6 bool) error {
	var errs []error
	var ipt *iptables.IPTables
	for _, t := range iptTables {
		present, err := tablePresent(f, v6, t)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if !present {
			continue
		}
		if f == FlavorNFT && b.iptBinaryMissing(f, v6) {
			// The uninstall's image has no iptables: see iptnft_netlink.go.
			if err := removeIPTNFTNetlink(v6); err != nil {
				return fmt.Errorf("%s (without the binary): %w", famName(v6), err)
			}
			return nil
		}
		if ipt == nil {
			if ipt, err = b.tool(f, v6); err != nil {
				return fmt.Errorf("%s: %w", famName(v6), err)
			}
		}
		errs = append(errs, removeTable(ipt, t))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("%s: %w", famName(v6), err)
	}
	return nil
}

// removeTable deletes our jumps and chains in one table.
func removeTable(ipt *iptables.IPTables, table string) error {
	var errs []error
	for _, j := range iptJumps {
		if j.Table != table {
			continue
		}
		// Loop: a crashed older run may have left the jump twice.
		for range maxJumpDel {
			ok, err := ipt.Exists(table, j.Chain, j.Args...)
			if err != nil && !isNotExist(err) {
				errs = append(errs, fmt.Errorf("check jump in %s/%s: %w", table, j.Chain, err))
			}
			if !ok {
				break
			}
			if err := ipt.Delete(table, j.Chain, j.Args...); err != nil {
				errs = append(errs, fmt.Errorf("delete jump in %s/%s: %w", table, j.Chain, err))
				break
			}
		}
	}
	for _, c := range iptChains {
		if c.Table != table {
			continue
		}
		if err := ipt.ClearAndDeleteChain(table, c.Chain); err != nil && !isNotExist(err) {
			errs = append(errs, fmt.Errorf("delete chain %s: %w", c, err))
		}
	}
	return errors.Join(errs...)
}

func isNotExist(err error) bool {
	var e *iptables.Error
	return errors.As(err, &e) && e.IsNotExist()
}
