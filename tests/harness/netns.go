package harness

import (
	"context"
	"net"

	"github.com/containernetworking/plugins/pkg/ns"
)

// netnsDialer returns a DialContext that opens its TCP sockets inside the
// network namespace at path (the socket is created on a thread switched
// into that netns; it stays there once the thread switches back).
func netnsDialer(path string) func(ctx context.Context, network, addr string) (net.Conn, error) {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		return DialInNetns(ctx, path, network, addr)
	}
}

// DialInNetns dials addr from inside the network namespace at path.
func DialInNetns(ctx context.Context, path, network, addr string) (net.Conn, error) {
	netns, err := ns.GetNS(path)
	if err != nil {
		return nil, err
	}
	defer netns.Close()
	var c net.Conn
	err = netns.Do(func(ns.NetNS) error {
		var d net.Dialer
		var err error
		c, err = d.DialContext(ctx, network, addr)
		return err
	})
	return c, err
}

// ListenInNetns opens a TCP listener inside the network namespace at path.
func ListenInNetns(path, network, addr string) (net.Listener, error) {
	netns, err := ns.GetNS(path)
	if err != nil {
		return nil, err
	}
	defer netns.Close()
	var l net.Listener
	err = netns.Do(func(ns.NetNS) error {
		var err error
		l, err = net.Listen(network, addr)
		return err
	})
	return l, err
}
