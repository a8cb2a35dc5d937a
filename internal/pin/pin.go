// Package pin keeps the project's dependencies in go.mod while the packages
// that use them are being written. Remove once they all have importers.
package pin

import (
	_ "github.com/containernetworking/cni/libcni"
	_ "github.com/containernetworking/cni/pkg/skel"
	_ "github.com/containernetworking/cni/pkg/types/100"
	_ "github.com/containernetworking/plugins/pkg/ns"
	_ "github.com/containernetworking/plugins/pkg/testutils"
	_ "github.com/coreos/go-iptables/iptables"
	_ "github.com/google/nftables"
	_ "github.com/google/nftables/expr"
	_ "github.com/prometheus/client_golang/prometheus"
	_ "github.com/prometheus/client_golang/prometheus/promhttp"
	_ "github.com/vishvananda/netlink"
	_ "github.com/vishvananda/netns"
	_ "gopkg.in/yaml.v3"
)
