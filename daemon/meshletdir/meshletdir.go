// Package meshletdir says where a pod's Meshless folder is on the host:
// the folder a pod sees as /meshlet, with server/<service> (the unix
// sockets the pod's apps serve) and client/meshless (the daemon's native
// API socket) in it.
//
//	l, err := meshletdir.Parse("/var/lib/kubelet/pods/{uid}/volumes/kubernetes.io~empty-dir/meshless-meshlet")
//	dir, err := l.PodDir("shop", "web-7d9f", "0b1c...")   // the pod's /meshlet on the host
//	p, err := l.ServerSocket("shop", "web-7d9f", uid, "web") // .../server/web
//
// The layout is a path with placeholders {namespace}, {name} and {uid}. On
// Kubernetes the folder is an emptyDir volume that the admission webhook
// adds to the pods of a Meshlet (mounted at /meshlet), which the kubelet
// keeps under the pod's UID; in the local lab it is
// /run/meshless/meshlet/{namespace}/{name}, which the lab's apps use as
// they are (they share the host's file system). A layout without
// placeholders is a base folder: {namespace}/{name} below it.
package meshletdir

import (
	"errors"
	"fmt"
	"path/filepath"
	"strings"
)

// Default is the layout of the local lab and of a node without
// Kubernetes.
const Default = "/run/meshless/meshlet/{namespace}/{name}"

// Layout maps a pod to its Meshless folder on the host.
type Layout struct{ tmpl string }

// Parse checks a layout: an absolute path, placeholders only as whole
// {namespace}, {name} or {uid}.
func Parse(s string) (Layout, error) {
	if s == "" {
		s = Default
	}
	if !filepath.IsAbs(s) {
		return Layout{}, fmt.Errorf("meshlet dir %q: not an absolute path", s)
	}
	rest := s
	for _, p := range []string{"{namespace}", "{name}", "{uid}"} {
		rest = strings.ReplaceAll(rest, p, "")
	}
	if strings.ContainsAny(rest, "{}") {
		return Layout{}, fmt.Errorf("meshlet dir %q: unknown placeholder (want {namespace}, {name}, {uid})", s)
	}
	if !strings.Contains(s, "{") {
		s = filepath.Join(s, "{namespace}", "{name}")
	}
	return Layout{tmpl: filepath.Clean(s)}, nil
}

// String returns the layout's template.
func (l Layout) String() string { return l.tmpl }

// ErrUnknown: the layout needs a field the pod's registration lacks.
var ErrUnknown = errors.New("pod's folder unknown")

// PodDir returns the host path of the pod's /meshlet. Every field the
// layout uses must be a plain file name (they come from registrations and
// tunnel headers: no path tricks).
func (l Layout) PodDir(namespace, name, uid string) (string, error) {
	if l.tmpl == "" {
		l.tmpl = Default
	}
	out := l.tmpl
	for p, v := range map[string]string{"{namespace}": namespace, "{name}": name, "{uid}": uid} {
		if !strings.Contains(out, p) {
			continue
		}
		if !Plain(v) {
			return "", fmt.Errorf("%w: %s %q", ErrUnknown, strings.Trim(p, "{}"), v)
		}
		out = strings.ReplaceAll(out, p, v)
	}
	return out, nil
}

// ServerSocket returns the host path of the pod's socket for service (or
// port number) name: <pod dir>/server/<name>.
func (l Layout) ServerSocket(namespace, pod, uid, name string) (string, error) {
	if !Plain(name) {
		return "", fmt.Errorf("%w: socket name %q", ErrUnknown, name)
	}
	dir, err := l.PodDir(namespace, pod, uid)
	if err != nil {
		return "", err
	}
	return filepath.Join(dir, "server", name), nil
}

// ClientSocket returns the host path of the daemon's native API socket in
// the pod's folder: <pod dir>/client/meshless.
func (l Layout) ClientSocket(namespace, pod, uid string) (string, error) {
	dir, err := l.PodDir(namespace, pod, uid)
	if err != nil {
		return "", err
	}
	return filepath.Join(dir, "client", "meshless"), nil
}

// Plain reports whether s can be one element of a path: not empty, not
// "." or "..", no "/" or NUL, at most 253 bytes.
func Plain(s string) bool {
	return s != "" && s != "." && s != ".." && len(s) <= 253 && !strings.ContainsAny(s, "/\x00")
}
