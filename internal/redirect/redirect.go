// Package redirect writes and removes the traffic redirection rules inside a
// pod's network namespace: outbound TCP to the daemon's port 15001, inbound
// TCP to 15006, with the exclusions a pod asks for.
//
// Every method acts on the network namespace of the calling OS thread; the
// caller enters the pod netns first (containernetworking/plugins pkg/ns,
// which locks the thread for the duration):
//
//	host, err := redirect.Detect() // in the host netns
//	b, err := redirect.New(redirect.ModeAuto, redirect.WithHost(host))
//	err = podNS.Do(func(ns.NetNS) error { return b.Apply(spec) })
//
// Two backends: iptables (coreos/go-iptables, iptables-nft or iptables-legacy
// binaries; chains MESHLESS_OUTPUT and MESHLESS_PREROUTING in table nat,
// jumped to from OUTPUT and PREROUTING, and MESHLESS_OUTPUT in table mangle,
// jumped to from OUTPUT) and nftables (google/nftables, native netlink; one
// table inet meshless, replaced in one transaction). Both also add the same
// ip rules and routes (vishvananda/netlink), described next.
//
// # Transparent source
//
// The daemon connects to a pod's app from inside the pod netns with the
// real client's address as source (IP_TRANSPARENT), so the app sees who
// called. The app's replies go to that foreign address, which the pod's
// routes send out of eth0, away from the daemon's socket in this very
// netns. Replies are therefore routed by mark:
//
//   - The daemon marks such sockets wellknown.TransparentMark: the skip mark
//     (so the redirection rules let them pass) plus Spec.TransparentMark
//     (bit 16, 0x10000, by default), outside the skip mark's mask. A separate bit, not the skip
//     mark itself: the daemon's other sockets (passthrough egress, sockets
//     to remote nodes) carry the skip mark and must keep normal routing.
//   - Packets sent with the bit save it into their connection's conntrack
//     mark (CONNMARK --save-mark, ct mark set ct mark | bit), and packets of
//     a connection with the bit in its ct mark get it onto their own mark
//     (--restore-mark, meta mark set meta mark | bit). The app's socket has
//     no mark, so this is how its replies get the bit. Only TCP.
//   - ip rule "fwmark bit/bit lookup Spec.TransparentTable" (priority
//     TransparentRulePriority, per family), and in that table "local
//     default dev lo": a marked reply is delivered on this host, where the
//     daemon's socket, bound to the foreign address, receives it.
//
// The restore must happen in a hook that routes again after a mark change:
// the app's socket routed the reply (out of eth0) before netfilter saw it.
// iptables' mangle OUTPUT does that re-routing (ip_route_me_harder); in
// nftables only a chain of type route does it (a filter chain would change
// the mark and keep the old route), hence chain transparent, type route hook
// output priority mangle. Nothing is needed in PREROUTING: both directions
// are sent inside the pod netns, so each packet passes OUTPUT (save,
// restore, re-route) before it loops back through lo, and a looped-back
// packet keeps its conntrack entry and mark. The app still needs a route
// towards the foreign address for its first lookup (a pod has a default
// route), and lo must be up (a runtime brings it up).
//
// The ip rules and routes carry routing protocol 77 ("proto 77" in `ip
// rule`/`ip route`), so Remove deletes exactly those, whichever spec made
// them. Any other socket in the pod that sets bit 16 in its mark has its
// traffic delivered locally: the bit is reserved for the daemon.
//
// # Auto detection
//
// ModeAuto decides per call, in the pod netns, and needs to know the host
// too: the pod netns of a fresh pod is empty, so only the host tells whether
// the node runs iptables (kube-proxy, the primary CNI). A pod netns is
// entered by setns on one locked thread, so the host cannot be inspected
// from there; the caller detects it beforehand with Detect and passes it
// with WithHost. Without WithHost, New runs Detect itself, which is right
// when New is called in the host netns, as the plugin does. The policy
// (see choose): our nftables table already in the pod keeps nftables; else
// iptables-legacy tables in the pod, then iptables-nft tables in the pod,
// then the same on the host, pick iptables of that flavor (legacy first);
// else nftables (also iptables-legacy when the kernel has no nf_tables).
// Name reports the backend the last call used; Remove in auto mode cleans
// both backends, since the choice may differ from the one at Apply time.
//
// Methods normalise the spec themselves (Spec.Normalize): zero ports,
// marks and table take the cniapi defaults, exclusions are sorted and deduplicated,
// and excluded CIDRs of a family the spec does not program are ignored.
package redirect

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"sync"
)

// Mode selects a backend; it is the plugin's "redirect" conf key.
type Mode string

// The backends.
const (
	ModeAuto     Mode = "auto"
	ModeIPTables Mode = "iptables"
	ModeNFTables Mode = "nftables"
)

// Spec is everything the rules of one pod depend on.
type Spec struct {
	// OutboundPort and InboundPort are where TCP is redirected to.
	OutboundPort uint16
	InboundPort  uint16
	// Mark and MarkMask identify packets from the daemon's own sockets;
	// they pass untouched in both directions.
	Mark, MarkMask uint32
	// TransparentMark is the mark bit (or bits, all required) that the
	// daemon adds to Mark on sockets bound to a foreign source address
	// (IP_TRANSPARENT) inside the pod netns; it must lie outside MarkMask.
	// Replies to such connections are routed to the local host through
	// TransparentTable (see "Transparent source" in the package doc).
	// Zero takes wellknown.TransparentMarkBit.
	TransparentMark uint32
	// TransparentTable is the routing table holding the local default
	// routes for those replies. Zero takes wellknown.TransparentRouteTable.
	TransparentTable uint32
	// IPv4 and IPv6 select the families to program (the pod has an address
	// of that family).
	IPv4, IPv6 bool
	// ExcludeInboundPorts are destination ports of incoming TCP that are not
	// redirected. ExcludeOutboundPorts and ExcludeOutboundCIDRs likewise for
	// outgoing TCP. The tunnel and admin ports are always excluded by the
	// backends; callers need not list them.
	ExcludeInboundPorts  []uint16
	ExcludeOutboundPorts []uint16
	ExcludeOutboundCIDRs []netip.Prefix
}

// Backend programs the rules of one pod netns.
type Backend interface {
	// Name is "iptables" or "nftables" (the backend actually used, after
	// auto detection), for logs and status.
	Name() string
	// Apply makes the current netns's rules match spec exactly. Applying the
	// same spec twice changes nothing. On error nothing of the new rules is
	// left behind (the netns is as before the call, or without meshless
	// rules).
	Apply(spec Spec) error
	// Check returns an error that names what is missing or different when the
	// current netns's rules do not match spec.
	Check(spec Spec) error
	// Remove deletes every rule and chain or table the backend made and
	// nothing else; it succeeds when there is nothing to remove.
	Remove() error
}

// Option configures New.
type Option func(*options)

type options struct {
	host         *Detection
	flavor       Flavor
	path4, path6 string
}

// WithHost passes what Detect found in the host netns, for ModeAuto and
// for the iptables flavor. The zero Detection means the host uses nothing.
func WithHost(d Detection) Option { return func(o *options) { o.host = &d } }

// WithIPTablesFlavor fixes the iptables flavor instead of detecting it per
// call; the binaries are then iptables-<flavor> and ip6tables-<flavor> when
// installed, else iptables and ip6tables.
func WithIPTablesFlavor(f Flavor) Option { return func(o *options) { o.flavor = f } }

// WithIPTablesPaths fixes the iptables and ip6tables binaries (names looked
// up in PATH, or paths). Their flavor is asked from the IPv4 binary
// (--version) unless WithIPTablesFlavor sets it.
func WithIPTablesPaths(ipv4, ipv6 string) Option {
	return func(o *options) { o.path4, o.path6 = ipv4, ipv6 }
}

// New returns the backend for mode ("" is ModeAuto). It touches no rules.
// For ModeAuto and ModeIPTables without WithHost it runs Detect in the
// calling thread's netns, taken to be the host's.
func New(mode Mode, opts ...Option) (Backend, error) {
	var o options
	for _, opt := range opts {
		opt(&o)
	}
	switch o.flavor {
	case "", FlavorLegacy, FlavorNFT:
	default:
		return nil, fmt.Errorf("unknown iptables flavor %q", o.flavor)
	}
	if o.path4 != "" && o.path6 == "" || o.path4 == "" && o.path6 != "" {
		return nil, errors.New("iptables paths: give both ipv4 and ipv6")
	}
	if o.path4 != "" && o.flavor == "" {
		f, err := binaryFlavor(o.path4)
		if err != nil {
			return nil, fmt.Errorf("iptables flavor: %w", err)
		}
		o.flavor = f
	}
	if mode == "" {
		mode = ModeAuto
	}
	if mode == ModeNFTables {
		return nftBackend{}, nil
	}
	if mode != ModeAuto && mode != ModeIPTables {
		return nil, fmt.Errorf("unknown redirect mode %q (want auto, iptables or nftables)", mode)
	}
	if o.host == nil && (mode == ModeAuto || o.flavor == "") {
		d, err := Detect()
		if err != nil {
			return nil, fmt.Errorf("detect host: %w", err)
		}
		o.host = &d
	}
	var host Detection
	if o.host != nil {
		host = *o.host
	}
	ipt := &iptBackend{host: host, flavor: o.flavor, path4: o.path4, path6: o.path6}
	if mode == ModeIPTables {
		return ipt, nil
	}
	return &autoBackend{host: host, ipt: ipt, last: string(ModeAuto)}, nil
}

// autoBackend picks a backend per call (see the package doc).
type autoBackend struct {
	host Detection
	ipt  *iptBackend // the flavor stays empty unless fixed by an option

	mu   sync.Mutex
	last string
}

// Name returns the backend the last call used, "auto" before the first.
func (a *autoBackend) Name() string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.last
}

func (a *autoBackend) pick() (Backend, error) {
	pod, err := Detect()
	if err != nil {
		return nil, fmt.Errorf("detect: %w", err)
	}
	var b Backend = nftBackend{}
	if mode, f := choose(ModeAuto, a.host, pod); mode == ModeIPTables {
		ipt := *a.ipt
		if ipt.flavor == "" {
			ipt.flavor = f
		}
		b = &ipt
	}
	a.mu.Lock()
	a.last = b.Name()
	a.mu.Unlock()
	return b, nil
}

func (a *autoBackend) Apply(spec Spec) error {
	b, err := a.pick()
	if err != nil {
		return err
	}
	return b.Apply(spec)
}

func (a *autoBackend) Check(spec Spec) error {
	b, err := a.pick()
	if err != nil {
		return err
	}
	return b.Check(spec)
}

// Remove deletes what either backend made: detection may pick differently
// now than when the rules were applied (e.g. the host changed).
func (a *autoBackend) Remove() error {
	return errors.Join(nftBackend{}.Remove(), a.ipt.Remove())
}

// Render returns the rules a backend would program for spec, as text: for
// ModeNFTables what `nft list table inet meshless` prints, for ModeIPTables
// the iptables-save lines of our chains and jumps per family and table (nat,
// mangle). It is a pure function, for dry runs, logs and golden tests. The
// ip rules and routes both backends add are RenderRoutes'.
func Render(mode Mode, spec Spec) (string, error) {
	s, err := spec.Normalize()
	if err != nil {
		return "", err
	}
	switch mode {
	case ModeNFTables:
		return renderNFT(s), nil
	case ModeIPTables:
		var b strings.Builder
		for _, v6 := range s.families() {
			for _, t := range iptTables {
				fmt.Fprintf(&b, "# %s -t %s\n*%s\n", famName(v6), t, t)
				for _, l := range renderIPT(s, v6, t) {
					b.WriteString(l + "\n")
				}
				b.WriteString("COMMIT\n")
			}
		}
		return b.String(), nil
	}
	return "", fmt.Errorf("render: mode %q is not a backend", mode)
}

// RenderRoutes returns the policy routing both backends program for spec
// (see "Transparent source" in the package doc) as iproute2 lists it: per
// family our lines of `ip rule show` and `ip route show table all proto 77`.
// Like Render, it is pure.
func RenderRoutes(spec Spec) (string, error) {
	s, err := spec.Normalize()
	if err != nil {
		return "", err
	}
	return renderRoutes(s), nil
}
