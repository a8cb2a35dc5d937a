package redirect

import (
	"errors"
	"fmt"
	"net"
	"strings"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// The policy routing of transparent-source replies (see the package doc):
// per family one rule "fwmark M/M lookup T" and one route "local default dev
// lo" in table T. These are neither iptables nor nftables objects, so both
// backends share this code.
const (
	// TransparentRulePriority is the priority of the ip rules: after the
	// local table (0), before main (32766).
	TransparentRulePriority = 100
	// routeProto tags our rules and routes (rtm_protocol, FRA_PROTOCOL;
	// 77 is "M", free in iproute2's rt_protos), so Remove finds exactly
	// what this package made whatever spec made it, and nothing of others.
	routeProto = 77
)

// routeItem is one of our ip rules (rule true) or routes, reduced to what
// distinguishes it; the zero-valued shape fields describe what we make.
type routeItem struct {
	rule  bool
	v6    bool
	prio  int    // rules
	mark  uint32 // rules
	mask  uint32 // rules
	table uint32
	odd   string // a listed item that is not of our shape: how it differs
}

func (i routeItem) family() string {
	if i.v6 {
		return "-6"
	}
	return "-4"
}

func (i routeItem) String() string {
	if i.rule {
		s := fmt.Sprintf("ip %s rule pref %d fwmark %#x/%#x lookup %d", i.family(), i.prio, i.mark, i.mask, i.table)
		return s + i.odd
	}
	def := "0.0.0.0/0"
	if i.v6 {
		def = "::/0"
	}
	s := fmt.Sprintf("ip %s route local %s dev lo table %d", i.family(), def, i.table)
	return s + i.odd
}

// routeItems returns our rules and routes for a normalised spec, IPv4
// first, each family's rule before its route.
func routeItems(s Spec) []routeItem {
	var out []routeItem
	for _, v6 := range s.families() {
		out = append(out,
			routeItem{rule: true, v6: v6, prio: TransparentRulePriority, mark: s.TransparentMark, mask: s.TransparentMark, table: s.TransparentTable},
			routeItem{v6: v6, table: s.TransparentTable})
	}
	return out
}

// renderRoutes returns what iproute2 lists of ours for a normalised spec:
// the lines of `ip -4 rule show` tagged with our protocol, and
// `ip -4 route show table all proto 77`, then the same for -6.
func renderRoutes(s Spec) string {
	var b strings.Builder
	for _, i := range routeItems(s) {
		if i.rule {
			fmt.Fprintf(&b, "# ip %s rule show\n%d:\tfrom all fwmark %#x/%#x lookup %d proto %d\n",
				i.family(), i.prio, i.mark, i.mask, i.table, routeProto)
			continue
		}
		fmt.Fprintf(&b, "# ip %s route show table all proto %d\n", i.family(), routeProto)
		if i.v6 {
			fmt.Fprintf(&b, "local default dev lo table %d metric 1024 pref medium\n", i.table)
		} else {
			fmt.Fprintf(&b, "local default dev lo table %d scope host\n", i.table)
		}
	}
	return b.String()
}

// routeHandle opens rtnetlink in the calling thread's netns: the handle's
// socket stays there even if the Go runtime moves the goroutine.
func routeHandle() (*netlink.Handle, int, error) {
	h, err := netlink.NewHandle(unix.NETLINK_ROUTE)
	if err != nil {
		return nil, 0, fmt.Errorf("routing: netlink: %w", err)
	}
	lo, err := h.LinkByName("lo")
	if err != nil {
		h.Close()
		return nil, 0, fmt.Errorf("routing: find lo: %w", err)
	}
	return h, lo.Attrs().Index, nil
}

func nlFamily(v6 bool) int {
	if v6 {
		return netlink.FAMILY_V6
	}
	return netlink.FAMILY_V4
}

// nlRule and nlRoute build the netlink objects of an item.
func nlRule(i routeItem) *netlink.Rule {
	r := netlink.NewRule()
	r.Family = nlFamily(i.v6)
	r.Priority = i.prio
	r.Mark = i.mark
	mask := i.mask
	r.Mask = &mask
	r.Table = int(i.table)
	r.Protocol = routeProto
	return r
}

func nlRoute(i routeItem, lo int) *netlink.Route {
	dst := &net.IPNet{IP: net.IPv4zero.To4(), Mask: net.CIDRMask(0, 32)}
	scope := netlink.SCOPE_HOST // what ip route add local sets
	if i.v6 {
		dst = &net.IPNet{IP: net.IPv6zero, Mask: net.CIDRMask(0, 128)}
		scope = netlink.SCOPE_UNIVERSE // IPv6 routes have no scope
	}
	return &netlink.Route{Family: nlFamily(i.v6), Dst: dst, Type: unix.RTN_LOCAL, LinkIndex: lo,
		Scope: scope, Table: int(i.table), Protocol: routeProto}
}

// listed is one of our rules or routes as the kernel lists it, with the
// netlink object to delete it by.
type listed struct {
	item  routeItem
	rule  *netlink.Rule
	route *netlink.Route
}

// listRoutes returns every rule and route tagged with routeProto, in both
// families. A family the kernel does not have (IPv6 disabled) lists none.
func listRoutes(h *netlink.Handle, lo int) ([]listed, error) {
	var out []listed
	for _, v6 := range []bool{false, true} {
		rules, err := h.RuleListFiltered(nlFamily(v6), nil, 0)
		if errors.Is(err, unix.EAFNOSUPPORT) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("list ip %s rules: %w", routeItem{v6: v6}.family(), err)
		}
		for _, r := range rules {
			if r.Protocol != routeProto {
				continue
			}
			i := routeItem{rule: true, v6: v6, prio: r.Priority, mark: r.Mark, mask: 0xffffffff, table: uint32(r.Table)}
			if r.Mask != nil {
				i.mask = *r.Mask
			}
			if r.Src != nil || r.Dst != nil || r.IifName != "" || r.OifName != "" || r.Invert || r.Goto >= 0 ||
				r.IPProto != 0 || r.Dport != nil || r.Sport != nil || r.UIDRange != nil || r.Tos != 0 {
				i.odd = " (with other selectors)"
			}
			out = append(out, listed{item: i, rule: &r})
		}
		routes, err := h.RouteListFiltered(nlFamily(v6), &netlink.Route{Table: unix.RT_TABLE_UNSPEC, Protocol: routeProto},
			netlink.RT_FILTER_TABLE|netlink.RT_FILTER_PROTOCOL)
		if errors.Is(err, unix.EAFNOSUPPORT) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("list ip %s routes: %w", routeItem{v6: v6}.family(), err)
		}
		for _, r := range routes {
			i := routeItem{v6: v6, table: uint32(r.Table)}
			if ones, _ := maskOf(r.Dst); r.Type != unix.RTN_LOCAL || ones != 0 || r.LinkIndex != lo || r.Gw != nil {
				i.odd = fmt.Sprintf(" (listed as %s)", r)
			}
			out = append(out, listed{item: i, route: &r})
		}
	}
	return out, nil
}

func maskOf(n *net.IPNet) (int, int) {
	if n == nil {
		return 0, 0 // the default route may be listed without Dst
	}
	return n.Mask.Size()
}

// checkRoutes names the first of our rules and routes missing, else the
// first one there that the spec does not want.
func checkRoutes(s Spec) error {
	h, lo, err := routeHandle()
	if err != nil {
		return err
	}
	defer h.Close()
	got, err := listRoutes(h, lo)
	if err != nil {
		return fmt.Errorf("routing: %w", err)
	}
	want := routeItems(s)
	for _, w := range want {
		if !hasItem(got, w) {
			return fmt.Errorf("routing: %q missing", w)
		}
	}
	for _, g := range got {
		if !containsItem(want, g.item) {
			return fmt.Errorf("routing: unexpected %q", g.item)
		}
	}
	return nil
}

func hasItem(l []listed, i routeItem) bool {
	for _, x := range l {
		if x.item == i {
			return true
		}
	}
	return false
}

func containsItem(l []routeItem, i routeItem) bool {
	for _, x := range l {
		if x == i {
			return true
		}
	}
	return false
}

// addRoutes adds the rules and routes of s that are missing and returns
// them, for undoRoutes. On error it has undone its own additions.
func addRoutes(s Spec) ([]routeItem, error) {
	h, lo, err := routeHandle()
	if err != nil {
		return nil, err
	}
	defer h.Close()
	got, err := listRoutes(h, lo)
	if err != nil {
		return nil, fmt.Errorf("routing: %w", err)
	}
	var added []routeItem
	for _, w := range routeItems(s) {
		if hasItem(got, w) {
			continue
		}
		if w.rule {
			err = h.RuleAdd(nlRule(w))
		} else {
			err = h.RouteAdd(nlRoute(w, lo))
		}
		if err != nil {
			err = fmt.Errorf("routing: add %q: %w", w, err)
			return nil, errors.Join(err, delItems(h, lo, added))
		}
		added = append(added, w)
	}
	return added, nil
}

// undoRoutes deletes what addRoutes added.
func undoRoutes(added []routeItem) error {
	if len(added) == 0 {
		return nil
	}
	h, lo, err := routeHandle()
	if err != nil {
		return err
	}
	defer h.Close()
	return delItems(h, lo, added)
}

func delItems(h *netlink.Handle, lo int, items []routeItem) error {
	var errs []error
	for _, i := range items {
		var err error
		if i.rule {
			err = h.RuleDel(nlRule(i))
		} else {
			err = h.RouteDel(nlRoute(i, lo))
		}
		if err != nil && !isGone(err) {
			errs = append(errs, fmt.Errorf("routing: delete %q: %w", i, err))
		}
	}
	return errors.Join(errs...)
}

// pruneRoutes deletes our rules and routes that s does not want (an earlier
// spec's table, a family switched off); keep nil deletes them all.
func pruneRoutes(keep []routeItem) error {
	h, lo, err := routeHandle()
	if err != nil {
		return err
	}
	defer h.Close()
	got, err := listRoutes(h, lo)
	if err != nil {
		return fmt.Errorf("routing: %w", err)
	}
	var errs []error
	for _, g := range got {
		if containsItem(keep, g.item) {
			continue
		}
		if g.rule != nil {
			err = h.RuleDel(g.rule)
		} else {
			err = h.RouteDel(g.route)
		}
		if err != nil && !isGone(err) {
			errs = append(errs, fmt.Errorf("routing: delete %q: %w", g.item, err))
		}
	}
	return errors.Join(errs...)
}

// syncRoutes makes our rules and routes match s exactly.
func syncRoutes(s Spec) error {
	if _, err := addRoutes(s); err != nil {
		return err
	}
	return pruneRoutes(routeItems(s))
}

// removeRoutes deletes every rule and route of ours, nothing else.
func removeRoutes() error { return pruneRoutes(nil) }

func isGone(err error) bool {
	return errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ESRCH)
}
