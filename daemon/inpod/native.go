package inpod

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/meshless/meshless/daemon/cniapi"
	"github.com/meshless/meshless/daemon/meshletdir"
)

// NativeHandler serves the native API (/meshlet/client/meshless) of a
// pod's apps.
type NativeHandler interface {
	// HandleNative owns c and must close it. It runs in its own
	// goroutine; ctx is cancelled when the pod is deregistered or the
	// daemon stops.
	HandleNative(ctx context.Context, pod *Pod, c *net.UnixConn)
}

// nativeSocketMode lets the pod's apps connect whatever their user: the
// socket is in the pod's own folder, which only the pod sees.
const nativeSocketMode = 0o666

// openNative opens the pod's native API socket, <pod dir>/client/meshless
// on the host (package meshletdir), and makes <pod dir>/server, where the
// pod's apps serve theirs. A layout keyed by the pod's UID (the
// kubelet's emptyDir, which the admission webhook adds to the pods of a
// Meshlet) is used only when the folder exists: a pod without it is in
// no Meshlet, and the daemon creates nothing under the kubelet's folders.
// Other layouts (the lab's) are created. It returns nil, nil when the pod
// has no folder.
func openNative(layout meshletdir.Layout, spec *cniapi.Pod) (net.Listener, error) {
	dir, err := layout.PodDir(spec.Namespace, spec.Name, spec.UID)
	if err != nil {
		return nil, nil // not a pod the layout can name (no namespace, no UID)
	}
	if strings.Contains(layout.String(), "{uid}") {
		if st, err := os.Stat(dir); err != nil || !st.IsDir() {
			return nil, nil
		}
	}
	path, err := layout.ClientSocket(spec.Namespace, spec.Name, spec.UID)
	if err != nil {
		return nil, nil
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, fmt.Errorf("native api folder: %w", err)
	}
	// The pod's servers put their sockets in server/, whatever their
	// user: the folder is the pod's own.
	server := filepath.Join(dir, "server")
	if err := os.MkdirAll(server, 0o777); err != nil {
		return nil, fmt.Errorf("native api server folder: %w", err)
	}
	if err := os.Chmod(server, 0o777); err != nil {
		return nil, fmt.Errorf("native api server folder: %w", err)
	}
	if fi, err := os.Lstat(path); err == nil {
		if fi.Mode().Type() != fs.ModeSocket {
			return nil, fmt.Errorf("native api socket %s exists and is not a socket", path)
		}
		// Ours from before a restart, or an app's squatting: either way
		// the daemon serves this name.
		if err := os.Remove(path); err != nil {
			return nil, fmt.Errorf("remove stale native api socket: %w", err)
		}
	}
	// Closing it removes the socket file. (meshletdir.Listen: the
	// kubelet's pod folders are too deep for a socket address.)
	ln, err := meshletdir.Listen(path)
	if err != nil {
		return nil, fmt.Errorf("native api socket: %w", err)
	}
	if err := os.Chmod(path, nativeSocketMode); err != nil {
		ln.Close()
		return nil, fmt.Errorf("chmod native api socket: %w", err)
	}
	return ln, nil
}

// acceptNative hands every connection on the pod's native API socket to h.
func (e *entry) acceptNative(ln net.Listener, h NativeHandler, log *slog.Logger) {
	defer e.loops.Done()
	backoff := 5 * time.Millisecond
	for {
		c, err := ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) || e.ctx.Err() != nil {
				return
			}
			log.Warn("native api accept failed", "pod", e.pod.Key(), "err", err)
			select {
			case <-time.After(backoff):
			case <-e.ctx.Done():
				return
			}
			backoff = min(2*backoff, time.Second)
			continue
		}
		backoff = 5 * time.Millisecond
		e.loops.Add(1)
		go func() {
			defer e.loops.Done()
			h.HandleNative(e.ctx, e.pod, c.(*net.UnixConn))
		}()
	}
}
