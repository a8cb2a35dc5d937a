// Command meshless-cni is the Meshless chained CNI plugin. It runs after the
// primary plugin in a conflist; see package plugin.
package main

import (
	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/version"

	"github.com/meshless/meshless/plugin"
)

// Version is set at build time with -ldflags "-X main.Version=...".
var Version = "dev"

func main() {
	skel.PluginMainFuncs(plugin.Funcs(), version.PluginSupports("0.4.0", "1.0.0", "1.1.0"), "meshless-cni "+Version)
}
