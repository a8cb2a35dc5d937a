package redirect

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"

	"github.com/meshless/meshless/daemon/cniapi"
	"github.com/meshless/meshless/internal/wellknown"
)

// Ports the backends always exempt from redirection, in both directions: the
// daemon's own tunnel and admin ports. Redirecting them would loop the
// daemon's traffic back into itself.
var alwaysExcludedPorts = []uint16{wellknown.TunnelPort, wellknown.AdminPort}

// DefaultSpec returns a Spec with the daemon's ports, skip mark and
// transparent mark bit and routing table, and both families off; callers
// set IPv4/IPv6 from the pod's addresses and add the exclusions.
func DefaultSpec() Spec {
	return Spec{
		OutboundPort:     wellknown.OutboundPort,
		InboundPort:      wellknown.InboundPort,
		Mark:             wellknown.SkipMark,
		MarkMask:         wellknown.SkipMarkMask,
		TransparentMark:  wellknown.TransparentMarkBit,
		TransparentTable: wellknown.TransparentRouteTable,
	}
}

// Normalize returns a copy of s with zero ports, marks and table filled in from
// DefaultSpec, exclusions sorted and deduplicated (so generated rules are
// deterministic and re-applying is a no-op), prefixes masked to their network
// address, and ports that the backends always exclude (tunnel, admin)
// dropped from the lists. It validates the result; see Validate.
//
// Excluded CIDRs of a family that s does not program are kept; the rule
// generators ignore them for that family. They are not an error because the
// exclusion lists are cluster-wide configuration while the families are per
// pod.
func (s Spec) Normalize() (Spec, error) {
	d := DefaultSpec()
	if s.OutboundPort == 0 {
		s.OutboundPort = d.OutboundPort
	}
	if s.InboundPort == 0 {
		s.InboundPort = d.InboundPort
	}
	if s.Mark == 0 && s.MarkMask == 0 {
		s.Mark, s.MarkMask = d.Mark, d.MarkMask
	}
	if s.TransparentMark == 0 {
		s.TransparentMark = d.TransparentMark
	}
	if s.TransparentTable == 0 {
		s.TransparentTable = d.TransparentTable
	}
	var err error
	if s.ExcludeInboundPorts, err = normPorts(s.ExcludeInboundPorts); err != nil {
		return s, fmt.Errorf("exclude inbound ports: %w", err)
	}
	if s.ExcludeOutboundPorts, err = normPorts(s.ExcludeOutboundPorts); err != nil {
		return s, fmt.Errorf("exclude outbound ports: %w", err)
	}
	if s.ExcludeOutboundCIDRs, err = normPrefixes(s.ExcludeOutboundCIDRs); err != nil {
		return s, fmt.Errorf("exclude outbound cidrs: %w", err)
	}
	return s, s.Validate()
}

// Validate reports whether s can be programmed as is. It expects a
// normalised spec (ports, marks and table set); Normalize calls it.
func (s Spec) Validate() error {
	switch {
	case !s.IPv4 && !s.IPv6:
		return errors.New("no address family enabled (ipv4 and ipv6 both off)")
	case s.OutboundPort == 0 || s.InboundPort == 0:
		return errors.New("outbound and inbound ports must be set")
	case s.OutboundPort == s.InboundPort:
		return fmt.Errorf("outbound and inbound port are both %d", s.OutboundPort)
	case s.MarkMask == 0:
		return errors.New("mark mask is zero: every packet would skip redirection")
	case s.Mark&^s.MarkMask != 0:
		return fmt.Errorf("mark %#x has bits outside mask %#x", s.Mark, s.MarkMask)
	case s.TransparentMark == 0:
		return errors.New("transparent mark is zero")
	case s.TransparentMark&s.MarkMask != 0:
		// The daemon's transparent sockets carry Mark|TransparentMark: with
		// an overlap they would fail the skip match and be redirected back
		// to the daemon, or every skip-marked socket would be routed to lo.
		return fmt.Errorf("transparent mark %#x overlaps mark mask %#x", s.TransparentMark, s.MarkMask)
	case isReservedTable(s.TransparentTable):
		return fmt.Errorf("transparent routing table %d is reserved (unspec, compat, default, main or local)", s.TransparentTable)
	}
	// Redirecting to an excluded port would still work, but excluding the
	// redirect target itself means the daemon's listener would be reached
	// directly by packets that carry that port; that is only a mistake.
	for _, p := range alwaysExcludedPorts {
		if p == s.OutboundPort || p == s.InboundPort {
			return fmt.Errorf("redirect port %d is reserved (tunnel/admin)", p)
		}
	}
	for _, l := range [][]uint16{s.ExcludeInboundPorts, s.ExcludeOutboundPorts} {
		if slices.Contains(l, 0) {
			return errors.New("excluded port 0 is invalid")
		}
	}
	for _, p := range s.ExcludeOutboundCIDRs {
		if !p.IsValid() {
			return errors.New("invalid excluded cidr")
		}
	}
	return nil
}

// isReservedTable reports the routing tables the kernel or iproute2 own.
func isReservedTable(t uint32) bool {
	switch t {
	case 0, 252, 253, 254, 255: // unspec, compat, default, main, local
		return true
	}
	return false
}

// normPorts sorts and deduplicates ports and drops the always excluded ones.
func normPorts(in []uint16) ([]uint16, error) {
	out := make([]uint16, 0, len(in))
	for _, p := range in {
		if p == 0 {
			return nil, errors.New("port 0 is invalid")
		}
		if !slices.Contains(alwaysExcludedPorts, p) {
			out = append(out, p)
		}
	}
	slices.Sort(out)
	return slices.Compact(out), nil
}

// normPrefixes masks, sorts (IPv4 first) and deduplicates prefixes. An
// IPv4-mapped IPv6 prefix (::ffff:a.b.c.d/n) is rewritten as the IPv4 prefix
// it means: packets of an IPv4 socket never carry the mapped form, so as an
// IPv6 rule it would never match and the exclusion would silently fail.
func normPrefixes(in []netip.Prefix) ([]netip.Prefix, error) {
	out := make([]netip.Prefix, 0, len(in))
	for _, p := range in {
		if !p.IsValid() {
			return nil, fmt.Errorf("invalid prefix %q", p)
		}
		if a := p.Addr(); a.Is4In6() {
			if p.Bits() < 96 {
				return nil, fmt.Errorf("ipv4-mapped prefix %s is shorter than /96", p)
			}
			p = netip.PrefixFrom(a.Unmap(), p.Bits()-96)
		}
		out = append(out, p.Masked())
	}
	slices.SortFunc(out, func(a, b netip.Prefix) int {
		if c := a.Addr().Compare(b.Addr()); c != 0 {
			return c
		}
		return a.Bits() - b.Bits()
	})
	return slices.Compact(out), nil
}

// cidrsOf returns the prefixes of one family (v6 false: IPv4).
func cidrsOf(ps []netip.Prefix, v6 bool) []netip.Prefix {
	var out []netip.Prefix
	for _, p := range ps {
		if p.Addr().Is6() == v6 {
			out = append(out, p)
		}
	}
	return out
}

// families lists the families s programs, IPv4 first.
func (s Spec) families() []bool {
	var out []bool
	if s.IPv4 {
		out = append(out, false)
	}
	if s.IPv6 {
		out = append(out, true)
	}
	return out
}

// SpecFor is the rule spec for a registered pod: the defaults, the
// families of its addresses and its exclusions. The CNI plugin and the
// daemon's enrollment of pods already running both use it, so a pod gets
// the same rules whichever wrote them.
func SpecFor(p *cniapi.Pod) Spec {
	s := DefaultSpec()
	for _, ip := range p.IPs {
		if ip.Is4() {
			s.IPv4 = true
		} else {
			s.IPv6 = true
		}
	}
	s.ExcludeInboundPorts = p.Exclusions.InboundPorts
	s.ExcludeOutboundPorts = p.Exclusions.OutboundPorts
	s.ExcludeOutboundCIDRs = p.Exclusions.OutboundCIDRs
	return s
}
