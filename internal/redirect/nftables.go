package redirect

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"reflect"
	"strings"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// nftTableName is the nftables backend's one table, family inet (IPv4 and
// IPv6 in one place; the kernel has inet NAT since 5.2).
const nftTableName = "meshless"

// nftRule is one rule both as kernel expressions and as the text
// `nft list table` prints for them. Both come from the same builder, so the
// golden files of the text also pin the expressions (the root test compares
// the real listing with the text).
type nftRule struct {
	text  string
	exprs []expr.Any
}

// nftChain is one base chain of our table.
type nftChain struct {
	name  string
	typ   nftables.ChainType
	hook  *nftables.ChainHook
	prio  *nftables.ChainPriority
	head  string // the chain's first line in a listing
	rules []nftRule
}

// nftChains returns our table's chains for a normalised spec, in creation
// (and listing) order: the pure core of the nftables backend.
func nftChains(s Spec) []nftChain {
	var guard []nftRule
	switch {
	case s.IPv4 && !s.IPv6:
		guard = append(guard, nfprotoNot(unix.NFPROTO_IPV4, "ipv4"))
	case s.IPv6 && !s.IPv4:
		guard = append(guard, nfprotoNot(unix.NFPROTO_IPV6, "ipv6"))
	}
	// Non-TCP leaves first: every later rule can assume TCP, and UDP (DNS)
	// never pays for the exclusion rules.
	guard = append(guard, nftRule{"meta l4proto != tcp return", []expr.Any{
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: []byte{unix.IPPROTO_TCP}},
		ret(),
	}})

	out := append([]nftRule(nil), guard...)
	out = append(out, markRule(s), ifname(expr.MetaKeyOIFNAME, "oifname", "lo"))
	if s.IPv4 {
		out = append(out, daddr(netip.MustParsePrefix("127.0.0.0/8")))
	}
	if s.IPv6 {
		out = append(out, daddr(netip.MustParsePrefix("::1/128")))
	}
	for _, p := range append(append([]uint16(nil), alwaysExcludedPorts...), s.ExcludeOutboundPorts...) {
		out = append(out, dport(p))
	}
	for _, v6 := range s.families() {
		for _, p := range cidrsOf(s.ExcludeOutboundCIDRs, v6) {
			out = append(out, daddr(p))
		}
	}
	out = append(out, redirect(s.OutboundPort))

	in := append([]nftRule(nil), guard...)
	in = append(in, ifname(expr.MetaKeyIIFNAME, "iifname", "lo"), markRule(s))
	for _, p := range append(append([]uint16(nil), alwaysExcludedPorts...), s.ExcludeInboundPorts...) {
		in = append(in, dport(p))
	}
	in = append(in, redirect(s.InboundPort))

	// Transparent source (see the package doc). A type route chain: when a
	// rule changes the mark, the kernel routes the packet again after the
	// chain, with the new mark, so the ip rule sends it to the local table.
	tp := append([]nftRule(nil), guard...)
	tp = append(tp, saveMark(s.TransparentMark), restoreMark(s.TransparentMark))

	return []nftChain{
		{"prerouting", nftables.ChainTypeNAT, nftables.ChainHookPrerouting, nftables.ChainPriorityNATDest,
			"type nat hook prerouting priority dstnat; policy accept;", in},
		{"output", nftables.ChainTypeNAT, nftables.ChainHookOutput, nftables.ChainPriorityNATDest,
			"type nat hook output priority -100; policy accept;", out},
		{"transparent", nftables.ChainTypeRoute, nftables.ChainHookOutput, nftables.ChainPriorityMangle,
			"type route hook output priority mangle; policy accept;", tp},
	}
}

// bitsSet loads a mark (meta mark or ct mark) and compares it under bits
// with bits: all of them set.
func bitsSet(load expr.Any, bits uint32) []expr.Any {
	b := binaryutil.NativeEndian.PutUint32(bits)
	return []expr.Any{load,
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: b, Xor: make([]byte, 4)},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: b}}
}

// orBits loads a mark, sets bits in it (nft encodes "| x" as "& ^x ^ x")
// and stores it back.
func orBits(load, store expr.Any, bits uint32) []expr.Any {
	return []expr.Any{load,
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4,
			Mask: binaryutil.NativeEndian.PutUint32(^bits), Xor: binaryutil.NativeEndian.PutUint32(bits)},
		store}
}

func metaMark() *expr.Meta { return &expr.Meta{Key: expr.MetaKeyMARK, Register: 1} }
func ctMark() *expr.Ct     { return &expr.Ct{Key: expr.CtKeyMARK, Register: 1} }

// saveMark copies the transparent bits of a packet's mark into its
// connection's mark. Only packets that have them get here, so setting the
// bits is the masked copy (CONNMARK --save-mark under the bits).
func saveMark(bits uint32) nftRule {
	return nftRule{fmt.Sprintf("meta mark & 0x%08x == 0x%08x ct mark set ct mark | 0x%08x", bits, bits, bits),
		append(bitsSet(metaMark(), bits), orBits(ctMark(), &expr.Ct{Key: expr.CtKeyMARK, Register: 1, SourceRegister: true}, bits)...)}
}

// restoreMark puts the transparent bits of a connection's mark back on its
// packets (the app's replies).
func restoreMark(bits uint32) nftRule {
	return nftRule{fmt.Sprintf("ct mark & 0x%08x == 0x%08x meta mark set meta mark | 0x%08x", bits, bits, bits),
		append(bitsSet(ctMark(), bits), orBits(metaMark(), &expr.Meta{Key: expr.MetaKeyMARK, Register: 1, SourceRegister: true}, bits)...)}
}

func ret() *expr.Verdict { return &expr.Verdict{Kind: expr.VerdictReturn} }

func nfprotoNot(proto byte, name string) nftRule {
	return nftRule{"meta nfproto != " + name + " return", []expr.Any{
		&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: []byte{proto}},
		ret(),
	}}
}

// markRule lets the daemon's own packets (socket mark) pass. The mark is
// in host byte order, as the kernel keeps skb->mark.
func markRule(s Spec) nftRule {
	e := []expr.Any{&expr.Meta{Key: expr.MetaKeyMARK, Register: 1}}
	text := fmt.Sprintf("meta mark 0x%08x return", s.Mark)
	if s.MarkMask != 0xffffffff {
		e = append(e, &expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4,
			Mask: binaryutil.NativeEndian.PutUint32(s.MarkMask), Xor: make([]byte, 4)})
		text = fmt.Sprintf("meta mark & 0x%08x == 0x%08x return", s.MarkMask, s.Mark)
	}
	e = append(e, &expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binaryutil.NativeEndian.PutUint32(s.Mark)}, ret())
	return nftRule{text, e}
}

// ifname matches an interface by name, padded to IFNAMSIZ as nft does (an
// exact match, not a prefix).
func ifname(key expr.MetaKey, word, name string) nftRule {
	data := make([]byte, unix.IFNAMSIZ)
	copy(data, name)
	return nftRule{fmt.Sprintf("%s %q return", word, name), []expr.Any{
		&expr.Meta{Key: key, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: data},
		ret(),
	}}
}

// daddr returns for destinations in p. In an inet table the network header
// is only meaningful after the nfproto check, so it comes first (nft adds
// the same dependency and hides it when listing).
func daddr(p netip.Prefix) nftRule {
	proto, word, off, size := byte(unix.NFPROTO_IPV4), "ip", uint32(16), uint32(4)
	if p.Addr().Is6() {
		proto, word, off, size = unix.NFPROTO_IPV6, "ip6", 24, 16
	}
	e := []expr.Any{
		&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{proto}},
	}
	if p.Bits() == 0 {
		// The whole family: nft cannot print a /0 match, and needs none.
		return nftRule{fmt.Sprintf("meta nfproto %s return", map[string]string{"ip": "ipv4", "ip6": "ipv6"}[word]), append(e, ret())}
	}
	e = append(e, &expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: off, Len: size})
	text := fmt.Sprintf("%s daddr %s return", word, p)
	if p.Bits() == p.Addr().BitLen() {
		text = fmt.Sprintf("%s daddr %s return", word, p.Addr())
	} else {
		mask := make([]byte, size)
		for i := 0; i < p.Bits(); i++ {
			mask[i/8] |= 0x80 >> (i % 8)
		}
		e = append(e, &expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: size, Mask: mask, Xor: make([]byte, size)})
	}
	return nftRule{text, append(e, &expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: p.Masked().Addr().AsSlice()}, ret())}
}

func l4tcp() []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.IPPROTO_TCP}},
	}
}

func dport(p uint16) nftRule {
	return nftRule{fmt.Sprintf("tcp dport %d return", p), append(l4tcp(),
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binaryutil.BigEndian.PutUint16(p)},
		ret())}
}

func redirect(port uint16) nftRule {
	return nftRule{fmt.Sprintf("meta l4proto tcp redirect to :%d", port), append(l4tcp(),
		&expr.Immediate{Register: 1, Data: binaryutil.BigEndian.PutUint16(port)},
		&expr.Redir{RegisterProtoMin: 1})}
}

// renderNFT returns what `nft list table inet meshless` prints for a
// normalised spec.
func renderNFT(s Spec) string {
	var b strings.Builder
	fmt.Fprintf(&b, "table inet %s {\n", nftTableName)
	for i, c := range nftChains(s) {
		if i > 0 {
			b.WriteString("\n")
		}
		fmt.Fprintf(&b, "\tchain %s {\n\t\t%s\n", c.name, c.head)
		for _, r := range c.rules {
			fmt.Fprintf(&b, "\t\t%s\n", r.text)
		}
		b.WriteString("\t}\n")
	}
	b.WriteString("}\n")
	return b.String()
}

// nftConn opens nftables netlink in the calling thread's netns. The netns
// is passed as an fd, so the socket is made in that netns even though the
// netlink library may dial from another OS thread.
func nftConn() (*nftables.Conn, func(), error) {
	f, err := os.Open("/proc/thread-self/ns/net")
	if err != nil {
		return nil, nil, fmt.Errorf("open netns: %w", err)
	}
	c, err := nftables.New(nftables.WithNetNSFd(int(f.Fd())))
	if err != nil {
		f.Close()
		return nil, nil, fmt.Errorf("nftables: %w", err)
	}
	return c, func() { f.Close() }, nil
}

// isNoNFTables reports a kernel without nf_tables (or nfnetlink).
func isNoNFTables(err error) bool {
	return errors.Is(err, unix.EPROTONOSUPPORT) || errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.EAFNOSUPPORT)
}

// nftBackend programs the rules with native nftables netlink.
type nftBackend struct{}

func (nftBackend) Name() string { return string(ModeNFTables) }

var nftTable = &nftables.Table{Name: nftTableName, Family: nftables.TableFamilyINet}

// Apply implements Backend. The table goes in one netlink batch: the old
// table is deleted and the new one added in the same transaction, so the
// kernel switches atomically and a failure leaves the previous table. The
// ip rules and routes are added before the batch and the additions undone
// when it fails; rules and routes of an earlier spec are deleted after it.
func (b nftBackend) Apply(spec Spec) error {
	s, err := spec.Normalize()
	if err != nil {
		return fmt.Errorf("nftables: %w", err)
	}
	nftOK, routesOK := b.check(s) == nil, checkRoutes(s) == nil
	if nftOK && routesOK {
		return nil
	}
	added, err := addRoutes(s)
	if err != nil {
		return err
	}
	if !nftOK {
		if err := b.apply(s); err != nil {
			return errors.Join(err, undoRoutes(added))
		}
	}
	if err := pruneRoutes(routeItems(s)); err != nil {
		// Neither the old nor the new state: leave nothing of ours.
		return errors.Join(err, b.Remove())
	}
	return nil
}

func (nftBackend) apply(s Spec) error {
	conn, closeNS, err := nftConn()
	if err != nil {
		return err
	}
	defer closeNS()
	// Add before delete: deleting an absent table would fail the batch;
	// adding an existing one is a no-op.
	conn.AddTable(nftTable)
	conn.DelTable(nftTable)
	t := conn.AddTable(&nftables.Table{Name: nftTableName, Family: nftables.TableFamilyINet})
	for _, c := range nftChains(s) {
		ch := conn.AddChain(&nftables.Chain{Name: c.name, Table: t, Type: c.typ,
			Hooknum: c.hook, Priority: c.prio, Policy: policyAccept()})
		for _, r := range c.rules {
			conn.AddRule(&nftables.Rule{Table: t, Chain: ch, Exprs: r.exprs})
		}
	}
	if err := conn.Flush(); err != nil {
		return fmt.Errorf("nftables: apply table inet %s: %w", nftTableName, err)
	}
	return nil
}

func policyAccept() *nftables.ChainPolicy {
	p := nftables.ChainPolicyAccept
	return &p
}

// Check implements Backend.
func (b nftBackend) Check(spec Spec) error {
	s, err := spec.Normalize()
	if err != nil {
		return fmt.Errorf("nftables: %w", err)
	}
	if err := b.check(s); err != nil {
		return err
	}
	return checkRoutes(s)
}

// check compares the table only (not the ip rules and routes).
func (nftBackend) check(s Spec) error {
	conn, closeNS, err := nftConn()
	if err != nil {
		return err
	}
	defer closeNS()
	if _, err := conn.ListTableOfFamily(nftTableName, nftables.TableFamilyINet); err != nil {
		if errors.Is(err, unix.ENOENT) || isNoNFTables(err) {
			return fmt.Errorf("nftables: table inet %s missing", nftTableName)
		}
		return fmt.Errorf("nftables: list table inet %s: %w", nftTableName, err)
	}
	all, err := conn.ListChainsOfTableFamily(nftables.TableFamilyINet)
	if err != nil {
		return fmt.Errorf("nftables: list chains: %w", err)
	}
	got := map[string]*nftables.Chain{}
	for _, c := range all {
		if c.Table.Name == nftTableName {
			got[c.Name] = c
		}
	}
	want := nftChains(s)
	for _, w := range want {
		where := fmt.Sprintf("chain inet %s %s", nftTableName, w.name)
		c := got[w.name]
		if c == nil {
			return fmt.Errorf("nftables: %s missing", where)
		}
		delete(got, w.name)
		if c.Type != w.typ || c.Hooknum == nil || *c.Hooknum != *w.hook ||
			c.Priority == nil || *c.Priority != *w.prio || (c.Policy != nil && *c.Policy != nftables.ChainPolicyAccept) {
			return fmt.Errorf("nftables: %s is not %q", where, w.head)
		}
		rules, err := conn.GetRules(nftTable, c)
		if err != nil {
			return fmt.Errorf("nftables: list rules of %s: %w", where, err)
		}
		if err := diffNFTRules(rules, w.rules, where); err != nil {
			return fmt.Errorf("nftables: %w", err)
		}
	}
	for name := range got {
		return fmt.Errorf("nftables: unexpected chain inet %s %s", nftTableName, name)
	}
	return nil
}

// diffNFTRules names the first wanted rule missing from a chain, else the
// first unexpected one, else reports the order.
func diffNFTRules(got []*nftables.Rule, want []nftRule, where string) error {
	has := func(w nftRule) bool {
		for _, g := range got {
			if exprsEqual(g.Exprs, w.exprs) {
				return true
			}
		}
		return false
	}
	for _, w := range want {
		if !has(w) {
			return fmt.Errorf("rule %q missing in %s", w.text, where)
		}
	}
	for _, g := range got {
		found := false
		for _, w := range want {
			found = found || exprsEqual(g.Exprs, w.exprs)
		}
		if !found {
			return fmt.Errorf("unexpected rule (handle %d) in %s", g.Handle, where)
		}
	}
	if len(got) != len(want) {
		return fmt.Errorf("rules of %s duplicated", where)
	}
	for i := range want {
		if !exprsEqual(got[i].Exprs, want[i].exprs) {
			return fmt.Errorf("rules of %s out of order at %q", where, want[i].text)
		}
	}
	return nil
}

// exprsEqual compares expressions as the kernel dumps them with the ones we
// build. The kernel completes a redirect's range: it dumps the max register
// equal to the min, and may add the "port specified" flag. And
// google/nftables does not decode the source register of a ct set
// (NFTA_CT_SREG): it dumps with no register at all, which a ct load never
// has (register 0 is the verdict), so that shape is taken to be a set.
func exprsEqual(got, want []expr.Any) bool {
	if len(got) != len(want) {
		return false
	}
	for i := range got {
		g, w := got[i], want[i]
		if gc, ok := g.(*expr.Ct); ok && gc.Register == 0 && !gc.SourceRegister {
			wc, ok := w.(*expr.Ct)
			if !ok || !wc.SourceRegister || gc.Key != wc.Key || gc.Direction != wc.Direction {
				return false
			}
			continue
		}
		if gr, ok := g.(*expr.Redir); ok {
			wr, ok := w.(*expr.Redir)
			if !ok || gr.RegisterProtoMin != wr.RegisterProtoMin ||
				(gr.RegisterProtoMax != 0 && gr.RegisterProtoMax != gr.RegisterProtoMin) ||
				gr.Flags&^unix.NF_NAT_RANGE_PROTO_SPECIFIED != wr.Flags {
				return false
			}
			continue
		}
		if !reflect.DeepEqual(g, w) {
			return false
		}
	}
	return true
}

// Remove implements Backend: it deletes table inet meshless and our ip
// rules and routes, nothing else.
func (nftBackend) Remove() error {
	return errors.Join(removeNFTTable(), removeRoutes())
}

func removeNFTTable() error {
	conn, closeNS, err := nftConn()
	if err != nil {
		return err
	}
	defer closeNS()
	if _, err := conn.ListTableOfFamily(nftTableName, nftables.TableFamilyINet); err != nil {
		if errors.Is(err, unix.ENOENT) || isNoNFTables(err) {
			return nil
		}
		return fmt.Errorf("nftables: list table inet %s: %w", nftTableName, err)
	}
	conn.DelTable(nftTable)
	if err := conn.Flush(); err != nil && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("nftables: delete table inet %s: %w", nftTableName, err)
	}
	return nil
}
