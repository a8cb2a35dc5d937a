package forward

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/meshless/meshless/daemon/agent"
	"github.com/meshless/meshless/daemon/metrics"
	"github.com/meshless/meshless/daemon/podnet"
)

// The native convention: a pod that serves a unix socket for a service
// puts it at /meshlet/server/<name>, which on the host is
// <MeshletDir>/<pod namespace>/<pod name>/server/<name>. <name> is the
// service's name for connections to a service and the target port number
// for connections to the pod's address.

// SocketName returns the socket file name a connection looks for: the
// service name when there is one, else the port number.
func SocketName(service string, port uint16) string {
	if service != "" {
		return service
	}
	return strconv.Itoa(int(port))
}

// SocketPath returns the host path of pod's unix socket called name, or ""
// when pod has no namespace and name or any part is not a plain file name
// (names come from registrations and tunnel headers: no path tricks).
func SocketPath(meshletDir string, pod *agent.Pod, name string) string {
	spec := pod.Spec()
	for _, part := range []string{spec.Namespace, spec.Name, name} {
		if !plainName(part) {
			return ""
		}
	}
	return filepath.Join(meshletDir, spec.Namespace, spec.Name, "server", name)
}

func plainName(s string) bool {
	return s != "" && s != "." && s != ".." && len(s) <= 253 && !strings.ContainsAny(s, "/\x00")
}

// deliver connects to dst, an address of pod (registered on this node), on
// behalf of the client address src (invalid: none). It uses pod's unix
// socket for service (or for dst's port) when the pod serves one, else a
// socket inside the pod's netns bound to src with the transparent mark. It
// returns the connection and its path label, PathUDS or PathLocal.
func (h *Handler) deliver(ctx context.Context, pod *agent.Pod, src netip.Addr, dst netip.AddrPort, service string) (net.Conn, string, error) {
	if p := SocketPath(h.cfg.MeshletDir, pod, SocketName(service, dst.Port())); p != "" {
		c, err := dialUnix(ctx, p)
		if err == nil {
			return c, metrics.PathUDS, nil
		}
		if !errors.Is(err, fs.ErrNotExist) {
			// A stale or broken socket: the pod still listens on TCP,
			// maybe; say so and try it.
			h.log.Warn("pod unix socket unusable, dialling its address", "pod", pod.Key(), "socket", p, "err", err)
		}
	}
	o := podnet.DialOptions{}
	if src.IsValid() && sameFamily(src, dst.Addr()) && src.Unmap() != dst.Addr().Unmap() {
		o.Source = src.Unmap()
	}
	c, err := pod.Dial(ctx, network(dst.Addr()), dst.String(), o)
	if err != nil {
		return nil, "", fmt.Errorf("dial %s in pod %s: %w", dst, pod.Key(), err)
	}
	return c, metrics.PathLocal, nil
}

// dialUnix connects to the unix stream socket at path, or fails with an
// error wrapping fs.ErrNotExist when there is none.
func dialUnix(ctx context.Context, path string) (*net.UnixConn, error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	if st.Mode().Type() != fs.ModeSocket {
		return nil, fmt.Errorf("%s is not a socket: %w", path, fs.ErrNotExist)
	}
	var d net.Dialer
	c, err := d.DialContext(ctx, "unix", path)
	if err != nil {
		return nil, err
	}
	return c.(*net.UnixConn), nil
}
