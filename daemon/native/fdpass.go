package native

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"syscall"
)

// HandoffMarker is the single data byte that carries the handed-over
// descriptor. A stream socket cannot carry ancillary data without at
// least one byte of data, and a byte of its own, sent after the reply,
// keeps the descriptor off the reply: a client reads the reply with plain
// reads and only then needs recvmsg, for exactly this byte.
const HandoffMarker byte = 'F'

// maxRecvFDs is how many descriptors ReceiveConn makes room for. One is
// expected; room for more lets it see (and close) extra ones instead of
// having the kernel truncate them silently.
const maxRecvFDs = 8

// ErrHandoff is wrapped by every error of the descriptor handoff: no
// descriptor, more than one, dropped ones (MSG_CTRUNC), a wrong marker, or
// a descriptor that is not a stream socket.
var ErrHandoff = errors.New("bad handoff")

// SendConn passes s's descriptor to the peer of c with SCM_RIGHTS, as one
// HandoffMarker byte; the daemon calls it right after WriteReply with
// Reply.Handoff. s is typically the *net.UnixConn the daemon dialed to the
// server's socket (/meshlet/server/<service>), or an *os.File.
//
// Ownership: the kernel takes its own reference to the socket for the
// message in flight, and the client gets a new descriptor of its own, so
// SendConn leaves s open and the caller closes it once SendConn returns,
// error or not. The caller must not keep it: a copy held by the daemon
// keeps the socket alive, and the server would then never read EOF when
// the client closes without shutting down first.
func SendConn(c *net.UnixConn, s syscall.Conn) error {
	rc, err := s.SyscallConn()
	if err != nil {
		return fmt.Errorf("send conn: %w", err)
	}
	var werr error
	// Control holds s's descriptor open (a concurrent Close waits) for
	// as long as the sendmsg needs the number to stay valid.
	err = rc.Control(func(fd uintptr) {
		var n int
		n, _, werr = c.WriteMsgUnix([]byte{HandoffMarker}, syscall.UnixRights(int(fd)), nil)
		if werr == nil && n != 1 {
			werr = fmt.Errorf("sent %d bytes", n)
		}
	})
	if err == nil {
		err = werr
	}
	if err != nil {
		return fmt.Errorf("send conn: %w", err)
	}
	return nil
}

// ReceiveConn reads the HandoffMarker byte and the descriptor it carries
// from c, and returns the connection of that descriptor: a *net.UnixConn
// or *net.TCPConn, either of which supports CloseWrite. Dial calls it after
// a reply with Handoff; c must have nothing unread before the marker.
//
// Every received descriptor is close-on-exec from the moment it exists
// (MSG_CMSG_CLOEXEC, which Go's ReadMsgUnix passes on Linux; set again
// here for other systems), so a concurrent fork+exec of the app cannot
// leak the connection into a child that would keep it open. Descriptors
// ReceiveConn does not return (extra ones, or all of them on error) are
// closed; the returned connection owns its own descriptor and the caller
// closes it, and c, as usual.
func ReceiveConn(c *net.UnixConn) (net.Conn, error) {
	fd, err := receiveFD(c)
	if err != nil {
		return nil, fmt.Errorf("receive conn: %w", err)
	}
	f := os.NewFile(uintptr(fd), "meshless-handoff")
	// FileConn dups the descriptor (close-on-exec); f's copy is ours to
	// close whatever happens.
	defer f.Close()
	typ, err := syscall.GetsockoptInt(fd, syscall.SOL_SOCKET, syscall.SO_TYPE)
	if err != nil {
		return nil, fmt.Errorf("receive conn: %w: not a socket: %w", ErrHandoff, err)
	}
	if typ != syscall.SOCK_STREAM {
		return nil, fmt.Errorf("receive conn: %w: socket type %d, not a stream", ErrHandoff, typ)
	}
	// A listening socket is a stream socket too, but carries no bytes.
	if l, err := syscall.GetsockoptInt(fd, syscall.SOL_SOCKET, syscall.SO_ACCEPTCONN); err != nil || l != 0 {
		return nil, fmt.Errorf("receive conn: %w: a listening socket", ErrHandoff)
	}
	conn, err := net.FileConn(f)
	if err != nil {
		return nil, fmt.Errorf("receive conn: %w", err)
	}
	switch conn.(type) {
	case *net.UnixConn, *net.TCPConn:
		return conn, nil
	}
	conn.Close()
	return nil, fmt.Errorf("receive conn: %w: %T", ErrHandoff, conn)
}

// receiveFD reads one byte with its ancillary data and returns the single
// descriptor it carried. On every path, each descriptor it does not
// return is closed.
func receiveFD(c *net.UnixConn) (int, error) {
	var b [1]byte
	oob := make([]byte, syscall.CmsgSpace(4*maxRecvFDs))
	n, oobn, flags, _, err := c.ReadMsgUnix(b[:], oob)
	// Collect descriptors before looking at err: whatever arrived is
	// ours to close.
	fds, perr := parseRights(oob[:oobn])
	fail := func(e error) (int, error) {
		for _, fd := range fds {
			syscall.Close(fd)
		}
		return -1, e
	}
	switch {
	case errors.Is(err, io.EOF) || err == nil && n == 0:
		return fail(fmt.Errorf("%w: connection closed before the marker", ErrHandoff))
	case err != nil:
		return fail(err)
	case perr != nil:
		return fail(fmt.Errorf("%w: %w", ErrHandoff, perr))
	case flags&syscall.MSG_CTRUNC != 0:
		return fail(fmt.Errorf("%w: descriptors dropped (MSG_CTRUNC)", ErrHandoff))
	case b[0] != HandoffMarker:
		return fail(fmt.Errorf("%w: marker %#x", ErrHandoff, b[0]))
	case len(fds) != 1:
		return fail(fmt.Errorf("%w: %d descriptors, want 1", ErrHandoff, len(fds)))
	}
	return fds[0], nil
}

// parseRights returns every descriptor of the SCM_RIGHTS messages in oob,
// each set close-on-exec. Other control messages are ignored.
func parseRights(oob []byte) ([]int, error) {
	if len(oob) == 0 {
		return nil, nil
	}
	msgs, err := syscall.ParseSocketControlMessage(oob)
	if err != nil {
		return nil, err
	}
	var fds []int
	for _, m := range msgs {
		if m.Header.Level != syscall.SOL_SOCKET || m.Header.Type != syscall.SCM_RIGHTS {
			continue
		}
		got, err := syscall.ParseUnixRights(&m)
		if err != nil {
			return fds, err
		}
		for _, fd := range got {
			syscall.CloseOnExec(fd)
		}
		fds = append(fds, got...)
	}
	return fds, nil
}
