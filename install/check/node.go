package check

import (
	"context"
	"fmt"

	"github.com/meshless/meshless/install/cni"
	"github.com/meshless/meshless/internal/redirect"
	"github.com/meshless/meshless/internal/wellknown"
)

// defaultSocket is the plugin's and the daemon's default socket.
const defaultSocket = wellknown.DaemonSocket

// NodeOptions are the node's paths; the zero value is the defaults the
// installer, the plugin and the daemon use.
type NodeOptions struct {
	// ConfDir and BinDir are the runtime's CNI dirs (cni.DefaultConfDir,
	// cni.DefaultBinDir when empty).
	ConfDir, BinDir string
	// Socket is the daemon's unix socket; when empty, the conflist's
	// daemonSocket, else wellknown.DaemonSocket.
	Socket string
	// AdminAddr is the daemon's admin address; "" skips its check.
	AdminAddr string
	// Redirect is the backend to probe; when empty, the conflist's
	// "redirect", else auto.
	Redirect redirect.Mode
}

// DefaultAdminAddr is meshlessd's default --admin-addr.
var DefaultAdminAddr = fmt.Sprintf("127.0.0.1:%d", wellknown.AdminPort)

// NodeChecks returns the node's checks in report order: kernel, CNI,
// daemon. The conf dir is read once, here: the conflist's meshless-cni
// entry says which socket and redirect backend the plugin will use.
func NodeChecks(o NodeOptions) []Check {
	if o.ConfDir == "" {
		o.ConfDir = cni.DefaultConfDir
	}
	if o.BinDir == "" {
		o.BinDir = cni.DefaultBinDir
	}
	c := loadChain(o.ConfDir)
	mode := o.Redirect
	if mode == "" {
		mode = redirect.Mode(c.str("redirect", string(redirect.ModeAuto)))
	}
	socket, from := socketOrigin(o.Socket, c)
	k := &kernelProbe{mode: mode}
	return []Check{
		{"kernel: netns", func(ctx context.Context) Result { return k.get(ctx).netns }},
		{"kernel: redirect", func(ctx context.Context) Result { return k.get(ctx).redirect }},
		{"kernel: SO_ORIGINAL_DST", func(ctx context.Context) Result { return k.get(ctx).origDst }},
		{"kernel: transparent", func(ctx context.Context) Result { return k.get(ctx).transparent }},
		{"kernel: sockmap", checkSockmap},
		{"cni: chain", func(context.Context) Result { return checkChain(c, o.ConfDir) }},
		{"cni: plugin binary", func(ctx context.Context) Result { return checkPluginBinary(ctx, o.BinDir) }},
		{"cni: chain binaries", func(context.Context) Result { return checkChainBinaries(c, o.BinDir) }},
		{"daemon: socket", func(ctx context.Context) Result { return checkSocket(ctx, socket, from) }},
		{"daemon: ready", func(ctx context.Context) Result { return checkReady(ctx, socket) }},
		{"daemon: admin", func(ctx context.Context) Result { return checkAdmin(ctx, o.AdminAddr) }},
	}
}
