package lab

import (
	"fmt"
	"net"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

// Names of the links the lab makes. They live in the lab's own netns, so
// they never collide with the host's or another lab's.
const (
	underlayBridge = "ul0"  // the underlay bridge, in <prefix>-underlay
	nodeUplink     = "eth0" // each node's veth to the underlay
	podBridge      = "cni0" // the pod bridge the bridge plugin makes in a node
)

// nodeAddr returns node i's underlay address, 198.18.0.<i>.
func nodeAddr(i int) string { return fmt.Sprintf("198.18.0.%d", i) }

// nodePodCIDR returns node i's pod subnet, 198.19.<i>.0/24.
func nodePodCIDR(i int) string { return fmt.Sprintf("198.19.%d.0/24", i) }

// handleAt opens a netlink handle on the named netns.
func handleAt(name string) (*netlink.Handle, netns.NsHandle, error) {
	nsh, err := netns.GetFromPath(NetnsPath(name))
	if err != nil {
		return nil, 0, fmt.Errorf("open netns %s: %w", name, err)
	}
	h, err := netlink.NewHandleAt(nsh)
	if err != nil {
		nsh.Close()
		return nil, 0, fmt.Errorf("netlink in %s: %w", name, err)
	}
	return h, nsh, nil
}

// setupUnderlay makes the underlay bridge inside the underlay netns.
func setupUnderlay(underlay string) error {
	h, nsh, err := handleAt(underlay)
	if err != nil {
		return err
	}
	defer nsh.Close()
	defer h.Close()
	br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: underlayBridge}}
	if err := h.LinkAdd(br); err != nil {
		return fmt.Errorf("add underlay bridge: %w", err)
	}
	if err := h.LinkSetUp(br); err != nil {
		return fmt.Errorf("underlay bridge up: %w", err)
	}
	return nil
}

// setupNode wires node n into the underlay: a veth whose node end is eth0
// with the node's address, forwarding on and reverse-path filtering off
// (host-gw routing sends replies asymmetrically through the pod bridge).
func setupNode(underlay string, n *NodeState) error {
	// Sysctls first: "default" then applies to the links made below and to
	// the pod bridge the bridge plugin makes later.
	err := inNetns(n.Netns, func() error {
		for _, kv := range [][2]string{
			{"net/ipv4/ip_forward", "1"},
			{"net/ipv4/conf/all/rp_filter", "0"},
			{"net/ipv4/conf/default/rp_filter", "0"},
			{"net/ipv4/conf/all/forwarding", "1"},
		} {
			if err := writeSysctl(kv[0], kv[1]); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("node %s sysctls: %w", n.Name, err)
	}

	uh, uns, err := handleAt(underlay)
	if err != nil {
		return err
	}
	defer uns.Close()
	defer uh.Close()
	nh, nns, err := handleAt(n.Netns)
	if err != nil {
		return err
	}
	defer nns.Close()
	defer nh.Close()

	br, err := uh.LinkByName(underlayBridge)
	if err != nil {
		return fmt.Errorf("find underlay bridge: %w", err)
	}
	veth := &netlink.Veth{
		LinkAttrs:     netlink.LinkAttrs{Name: n.Name, MasterIndex: br.Attrs().Index},
		PeerName:      nodeUplink,
		PeerNamespace: netlink.NsFd(int(nns)),
	}
	if err := uh.LinkAdd(veth); err != nil {
		return fmt.Errorf("add veth for %s: %w", n.Name, err)
	}
	if err := uh.LinkSetUp(veth); err != nil {
		return fmt.Errorf("veth %s up: %w", n.Name, err)
	}

	lo, err := nh.LinkByName("lo")
	if err != nil {
		return fmt.Errorf("find lo in %s: %w", n.Name, err)
	}
	if err := nh.LinkSetUp(lo); err != nil {
		return fmt.Errorf("lo up in %s: %w", n.Name, err)
	}
	up, err := nh.LinkByName(nodeUplink)
	if err != nil {
		return fmt.Errorf("find %s in %s: %w", nodeUplink, n.Name, err)
	}
	addr, err := netlink.ParseAddr(n.Address + "/24")
	if err != nil {
		return fmt.Errorf("node address: %w", err)
	}
	if err := nh.AddrAdd(up, addr); err != nil {
		return fmt.Errorf("address %s on %s: %w", addr, n.Name, err)
	}
	if err := nh.LinkSetUp(up); err != nil {
		return fmt.Errorf("%s up in %s: %w", nodeUplink, n.Name, err)
	}
	return nil
}

// addHostGWRoutes routes every other node's pod subnet via that node's
// underlay address, in node n: flannel's host-gw, by hand.
func addHostGWRoutes(n *NodeState, nodes []*NodeState) error {
	h, nsh, err := handleAt(n.Netns)
	if err != nil {
		return err
	}
	defer nsh.Close()
	defer h.Close()
	up, err := h.LinkByName(nodeUplink)
	if err != nil {
		return fmt.Errorf("find %s in %s: %w", nodeUplink, n.Name, err)
	}
	for _, o := range nodes {
		if o == n {
			continue
		}
		_, dst, err := net.ParseCIDR(o.PodCIDR)
		if err != nil {
			return fmt.Errorf("pod cidr of %s: %w", o.Name, err)
		}
		r := &netlink.Route{LinkIndex: up.Attrs().Index, Dst: dst, Gw: net.ParseIP(o.Address)}
		if err := h.RouteReplace(r); err != nil {
			return fmt.Errorf("route %s via %s in %s: %w", dst, o.Address, n.Name, err)
		}
	}
	return nil
}
