// Package podtest builds pod-like network namespaces for the daemon's root
// tests: a netns with an address on a dummy interface, veth pairs between
// two of them, and helpers to connect from inside one.
package podtest

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os/exec"
	"syscall"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/vishvananda/netlink"

	"github.com/meshless/meshless/daemon/cniapi"
	"github.com/meshless/meshless/internal/nstest"
)

// NewNS returns a new netns with loopback up, removed when t ends (see
// nstest.New).
func NewNS(t testing.TB) ns.NetNS { return nstest.New(t) }

// Remove deletes n's bind mount, as the runtime does when a pod goes
// away (see nstest.Remove).
func Remove(n ns.NetNS) error { return nstest.Remove(n) }

// NewPod returns a netns (removed when t ends) whose interface "eth0"
// holds each of prefixes, like a pod after its primary CNI ran. eth0 is a
// veth whose peer stays in the same netns: enough for local addresses.
func NewPod(t testing.TB, prefixes ...string) ns.NetNS {
	t.Helper()
	n := NewNS(t)
	err := n.Do(func(ns.NetNS) error {
		v := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "eth0"}, PeerName: "eth0peer"}
		if err := netlink.LinkAdd(v); err != nil {
			return fmt.Errorf("add veth: %w", err)
		}
		for _, p := range prefixes {
			if err := addAddr(v, p); err != nil {
				return err
			}
		}
		peer, err := netlink.LinkByName("eth0peer")
		if err != nil {
			return err
		}
		if err := netlink.LinkSetUp(peer); err != nil {
			return err
		}
		return netlink.LinkSetUp(v)
	})
	if err != nil {
		t.Fatalf("set up pod netns: %v", err)
	}
	return n
}

func addAddr(l netlink.Link, prefix string) error {
	a, err := netlink.ParseAddr(prefix)
	if err != nil {
		return err
	}
	// No DAD: the address must be usable at once, not in a second.
	a.Flags |= 0x02 // IFA_F_NODAD
	if err := netlink.AddrAdd(l, a); err != nil {
		return fmt.Errorf("add %s: %w", prefix, err)
	}
	return nil
}

// Veth connects a and b with a veth pair ("eth0" in each), addresses
// addrA and addrB (prefixes) on the two ends. a and b must not have an
// eth0 yet.
func Veth(t testing.TB, a ns.NetNS, addrA string, b ns.NetNS, addrB string) {
	t.Helper()
	err := a.Do(func(ns.NetNS) error {
		v := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "eth0"}, PeerName: "peer0"}
		if err := netlink.LinkAdd(v); err != nil {
			return fmt.Errorf("add veth: %w", err)
		}
		peer, err := netlink.LinkByName("peer0")
		if err != nil {
			return err
		}
		if err := netlink.LinkSetNsFd(peer, int(b.Fd())); err != nil {
			return fmt.Errorf("move peer: %w", err)
		}
		if err := addAddr(v, addrA); err != nil {
			return err
		}
		return netlink.LinkSetUp(v)
	})
	if err != nil {
		t.Fatalf("veth in %s: %v", a.Path(), err)
	}
	err = b.Do(func(ns.NetNS) error {
		p, err := netlink.LinkByName("peer0")
		if err != nil {
			return err
		}
		if err := netlink.LinkSetName(p, "eth0"); err != nil {
			return err
		}
		if err := addAddr(p, addrB); err != nil {
			return err
		}
		return netlink.LinkSetUp(p)
	})
	if err != nil {
		t.Fatalf("veth peer in %s: %v", b.Path(), err)
	}
}

// Run runs a command inside n (through nsenter) and fails t on error.
func Run(t testing.TB, n ns.NetNS, args ...string) {
	t.Helper()
	cmd := exec.Command("nsenter", append([]string{"--net=" + n.Path(), "--"}, args...)...)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%v in %s: %v\n%s", args, n.Path(), err, out)
	}
}

// Dial connects to addr from inside n.
func Dial(n ns.NetNS, network, addr string) (*net.TCPConn, error) {
	var c net.Conn
	err := n.Do(func(ns.NetNS) error {
		var err error
		c, err = net.DialTimeout(network, addr, 5*time.Second)
		return err
	})
	if err != nil {
		return nil, err
	}
	return c.(*net.TCPConn), nil
}

// Listen opens a TCP listener inside n.
func Listen(t testing.TB, n ns.NetNS, network, addr string) *net.TCPListener {
	t.Helper()
	var ln net.Listener
	err := n.Do(func(ns.NetNS) error {
		var err error
		ln, err = net.Listen(network, addr)
		return err
	})
	if err != nil {
		t.Fatalf("listen %s in %s: %v", addr, n.Path(), err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln.(*net.TCPListener)
}

// Pod returns a registration for netns n with the given IPs.
func Pod(id string, n ns.NetNS, ips ...string) *cniapi.Pod {
	p := &cniapi.Pod{
		Attachment: cniapi.Attachment{ContainerID: id, IfName: "eth0"},
		Netns:      n.Path(),
		Namespace:  "default",
		Name:       "pod-" + id,
	}
	for _, ip := range ips {
		p.IPs = append(p.IPs, netip.MustParseAddr(ip))
	}
	return p
}

// ErrConnected is returned by Refused when a connection succeeded.
var ErrConnected = errors.New("connection accepted, want refused")

// Refused returns nil when connecting to addr from inside n is refused.
func Refused(n ns.NetNS, network, addr string) error {
	c, err := Dial(n, network, addr)
	if err == nil {
		c.Close()
		return ErrConnected
	}
	if !errors.Is(err, syscall.ECONNREFUSED) {
		return fmt.Errorf("connect %s: %w, want refused", addr, err)
	}
	return nil
}

// Metric returns the value of the counter or gauge name with exactly the
// given labels in reg, or -1 when there is none.
func Metric(t testing.TB, reg *prometheus.Registry, name string, labels map[string]string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatalf("gather metrics: %v", err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	next:
		for _, m := range mf.GetMetric() {
			if len(m.GetLabel()) != len(labels) {
				continue
			}
			for _, l := range m.GetLabel() {
				if v, ok := labels[l.GetName()]; !ok || v != l.GetValue() {
					continue next
				}
			}
			if m.GetCounter() != nil {
				return m.GetCounter().GetValue()
			}
			return m.GetGauge().GetValue()
		}
	}
	return -1
}

// Listening returns nil when something accepts connections on addr inside
// n. A reset counts: the daemon's handler may reset a connection that has
// nowhere to go before connect(2) returns.
func Listening(n ns.NetNS, network, addr string) error {
	c, err := Dial(n, network, addr)
	if err == nil {
		c.Close()
		return nil
	}
	if errors.Is(err, syscall.ECONNRESET) {
		return nil
	}
	return err
}
