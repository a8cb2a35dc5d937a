package meshletdir

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"

	"golang.org/x/sys/unix"
)

// A unix socket's address holds at most 107 bytes of path, and a pod's
// folder under the kubelet is already about that long
// (/var/lib/kubelet/pods/<uid>/volumes/kubernetes.io~empty-dir/meshless-meshlet):
// its sockets cannot be bound or dialled by their full path. Dial and
// Listen reach a socket with a long path through its folder, opened
// (O_PATH) and named /proc/self/fd/<n>/<socket>, which the kernel resolves
// like the full path.

// maxSunPath is the room for a path in struct sockaddr_un, without its NUL.
const maxSunPath = 107

// Dial connects to the unix stream socket at path, however long.
func Dial(ctx context.Context, path string) (*net.UnixConn, error) {
	var d net.Dialer
	var c net.Conn
	err := viaDir(path, func(short string) error {
		var err error
		c, err = d.DialContext(ctx, "unix", short)
		return err
	})
	if err != nil {
		return nil, err
	}
	return c.(*net.UnixConn), nil
}

// Listen makes a unix stream socket at path, however long. Closing the
// listener removes the socket file.
func Listen(path string) (net.Listener, error) {
	var ln *net.UnixListener
	err := viaDir(path, func(short string) error {
		var err error
		ln, err = net.ListenUnix("unix", &net.UnixAddr{Name: short, Net: "unix"})
		return err
	})
	if err != nil {
		return nil, err
	}
	if len(path) <= maxSunPath {
		ln.SetUnlinkOnClose(true)
		return ln, nil
	}
	// The name it was bound by, /proc/self/fd/<n>/..., means something
	// else once the folder's fd is closed: remove the socket by its path.
	ln.SetUnlinkOnClose(false)
	return &unlinkListener{UnixListener: ln, path: path}, nil
}

// unlinkListener removes its socket file by its full path when closed.
type unlinkListener struct {
	*net.UnixListener
	path string
}

// Close closes the listener and removes the socket file.
func (l *unlinkListener) Close() error {
	err := l.UnixListener.Close()
	os.Remove(l.path)
	return err
}

// viaDir calls fn with path, or, when path is too long for a socket
// address, with a short name of it through its folder opened for the
// call.
func viaDir(path string, fn func(short string) error) error {
	if len(path) <= maxSunPath {
		return fn(path)
	}
	fd, err := unix.Open(filepath.Dir(path), unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open %s: %w", filepath.Dir(path), err)
	}
	defer unix.Close(fd)
	short := "/proc/self/fd/" + strconv.Itoa(fd) + "/" + filepath.Base(path)
	if len(short) > maxSunPath {
		return fmt.Errorf("socket name %q too long", filepath.Base(path))
	}
	return fn(short)
}
