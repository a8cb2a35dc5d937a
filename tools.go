//go:build tools

// Package tools pins, in go.mod, the reference CNI plugins that `make
// cni-plugins` and the tests build: bridge, host-local and loopback at the
// containernetworking/plugins version required here.
package tools

import (
	_ "github.com/containernetworking/plugins/plugins/ipam/host-local"
	_ "github.com/containernetworking/plugins/plugins/main/bridge"
	_ "github.com/containernetworking/plugins/plugins/main/loopback"
)
