package native

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"syscall"
)

// DefaultSocketMode is the mode Listen gives a server's socket. Connecting
// to a unix socket needs write permission on it, and the daemon, or an
// app of another container of the pod, may run as any user, without
// CAP_DAC_OVERRIDE. Only the pod and the daemon see the directory; who may
// call the service is decided by the daemon's access control, not by the
// file's mode.
const DefaultSocketMode fs.FileMode = 0o666

// ErrInUse is wrapped by Listen's error when a server already listens on
// the service's socket.
var ErrInUse = errors.New("socket in use")

// ListenConfig opens servers' sockets. Its zero value is ready to use.
type ListenConfig struct {
	// Dir is the native API's directory; when empty, $MESHLESS_NATIVE_DIR
	// or DefaultDir. Listen opens Dir/server/<service>.
	Dir string
	// Mode is the socket's mode; DefaultSocketMode when 0.
	Mode fs.FileMode
}

// Listen listens for the daemon's connections to service with a zero
// ListenConfig.
func Listen(service string) (net.Listener, error) {
	var lc ListenConfig
	return lc.Listen(service)
}

// Listen listens on Dir/server/<service>, where the daemon connects to
// the service on behalf of its clients, native or not. Each accepted
// connection is a *net.UnixConn carrying one client's bytes, with
// half-close; the daemon sends no preamble.
//
// service must be a DNS-1123 label of at most 63 characters (the name of a
// service of the pod's Meshlet), which also keeps the path inside the
// directory. The directory must exist: Meshless provides it in every pod
// of a Meshlet, and a socket elsewhere would reach no one. A socket left
// by a server that is gone is replaced; a live one (it accepts
// connections) is an error wrapping ErrInUse, and a file that is not a
// socket is never removed. Closing the listener removes the socket.
func (lc *ListenConfig) Listen(service string) (net.Listener, error) {
	if !isLabel(service, MaxServiceLen) {
		return nil, fmt.Errorf("native listen: service %q is not a DNS-1123 label", service)
	}
	sdir := filepath.Join(baseDir(lc.Dir), ServerDir)
	if fi, err := os.Stat(sdir); err != nil {
		return nil, fmt.Errorf("native listen %s: %w", service, err)
	} else if !fi.IsDir() {
		return nil, fmt.Errorf("native listen %s: %s is not a directory", service, sdir)
	}
	path := filepath.Join(sdir, service)
	if err := removeStale(path); err != nil {
		return nil, fmt.Errorf("native listen %s: %w", service, err)
	}
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		return nil, fmt.Errorf("native listen %s: %w", service, err)
	}
	mode := lc.Mode
	if mode == 0 {
		mode = DefaultSocketMode
	}
	// bind(2) applied the umask; chmod widens to the intended mode. The
	// moment in between only refuses connections, it exposes nothing.
	if err := os.Chmod(path, mode); err != nil {
		ln.Close()
		return nil, fmt.Errorf("native listen %s: %w", service, err)
	}
	return ln, nil
}

// removeStale removes the socket at path if no one listens on it. A path
// that does not exist is fine; anything but a socket is left alone, since
// removing a user's file because its name matched a service would be
// destructive.
func removeStale(path string) error {
	fi, err := os.Lstat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	if fi.Mode().Type() != fs.ModeSocket {
		return fmt.Errorf("%s exists and is not a socket (%s); not removing it", path, fi.Mode().Type())
	}
	c, err := net.Dial("unix", path)
	if err == nil {
		c.Close()
		return fmt.Errorf("%w: %s", ErrInUse, path)
	}
	if !errors.Is(err, syscall.ECONNREFUSED) {
		return fmt.Errorf("probe %s: %w", path, err)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return nil
}
