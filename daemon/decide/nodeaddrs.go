package decide

import (
	"context"
	"log/slog"
	"net"
	"net/netip"
	"sync/atomic"
	"time"
)

// DefaultNodeAddrsInterval is how often NodeAddrs.Run refreshes the list.
const DefaultNodeAddrsInterval = 10 * time.Second

// NodeAddrs is the set of the node's own addresses: every address
// configured on an interface of the daemon's netns (the host's, or the
// lab node's), which is where kubelet probes come from. A pod sees such an
// address, typically its gateway on the node's bridge, as the client. The
// set is read at start and refreshed by Run. Its methods are safe for
// concurrent use; a nil *NodeAddrs contains nothing.
type NodeAddrs struct {
	set atomic.Pointer[map[netip.Addr]struct{}]
}

// NewNodeAddrs returns the node's addresses as they are now.
func NewNodeAddrs() (*NodeAddrs, error) {
	n := &NodeAddrs{}
	return n, n.Refresh()
}

// Refresh rereads the addresses.
func (n *NodeAddrs) Refresh() error {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return err
	}
	m := make(map[netip.Addr]struct{}, len(addrs))
	for _, a := range addrs {
		if p, ok := a.(*net.IPNet); ok {
			if ip, ok := netip.AddrFromSlice(p.IP); ok {
				m[ip.Unmap()] = struct{}{}
			}
		}
	}
	n.set.Store(&m)
	return nil
}

// Contains reports whether ip is one of the node's addresses.
func (n *NodeAddrs) Contains(ip netip.Addr) bool {
	if n == nil {
		return false
	}
	m := n.set.Load()
	if m == nil {
		return false
	}
	_, ok := (*m)[ip.Unmap()]
	return ok
}

// Run refreshes the addresses every interval (DefaultNodeAddrsInterval
// when 0) until ctx is done.
func (n *NodeAddrs) Run(ctx context.Context, interval time.Duration, log *slog.Logger) {
	if interval <= 0 {
		interval = DefaultNodeAddrsInterval
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if err := n.Refresh(); err != nil && log != nil {
				log.Warn("list node addresses", "err", err)
			}
		}
	}
}
