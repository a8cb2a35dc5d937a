package tunnel

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"time"
)

// Client dials tunnels. The zero value is ready to use.
type Client struct {
	// Dialer makes the TCP connection to the node; its Control can set
	// socket options such as the skip mark. The zero value when nil.
	Dialer *net.Dialer
}

// Dial connects to the tunnel server at node and asks it to connect to dst
// on behalf of src (the zero AddrPort to send no source). It returns only
// once the server reports that it reached the application; the returned
// connection then carries the application's bytes. A failure status is a
// *StatusError. ctx bounds the whole exchange.
func (c *Client) Dial(ctx context.Context, node, src, dst netip.AddrPort) (*net.TCPConn, error) {
	return c.DialHeader(ctx, node, Header{Dst: dst, Src: src})
}

// DialHeader is Dial with a whole header, for the fields beyond source and
// destination (the service name).
func (c *Client) DialHeader(ctx context.Context, node netip.AddrPort, h Header) (*net.TCPConn, error) {
	dst := h.Dst
	hdr, err := h.MarshalBinary()
	if err != nil {
		return nil, err
	}
	d := c.Dialer
	if d == nil {
		d = &net.Dialer{}
	}
	nc, err := d.DialContext(ctx, "tcp", node.String())
	if err != nil {
		return nil, fmt.Errorf("tunnel to %s: %w", node, err)
	}
	conn := nc.(*net.TCPConn)
	if dl, ok := ctx.Deadline(); ok {
		conn.SetDeadline(dl)
	}
	// Cancellation interrupts the write and the read below.
	stop := context.AfterFunc(ctx, func() { conn.SetDeadline(time.Unix(1, 0)) })
	st, ver, err := handshake(conn, hdr)
	if !stop() {
		conn.Close()
		return nil, fmt.Errorf("tunnel to %s: %w", node, ctx.Err())
	}
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("tunnel to %s: %w", node, err)
	}
	if st != StatusOK {
		conn.Close()
		return nil, fmt.Errorf("tunnel to %s for %s: %w", node, dst, &StatusError{Status: st, Version: ver})
	}
	conn.SetDeadline(time.Time{})
	return conn, nil
}

func handshake(conn *net.TCPConn, hdr []byte) (Status, uint8, error) {
	if _, err := conn.Write(hdr); err != nil {
		return 0, 0, fmt.Errorf("write header: %w", err)
	}
	var r [ReplyLen]byte
	if _, err := io.ReadFull(conn, r[:]); err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return 0, 0, fmt.Errorf("read reply: server closed the connection: %w", err)
		}
		return 0, 0, fmt.Errorf("read reply: %w", err)
	}
	if r[0] != replyMagic0 || r[1] != replyMagic1 {
		return 0, 0, fmt.Errorf("read reply: not a tunnel server (% x)", r[:])
	}
	return Status(r[3]), r[2], nil
}

// Dial is (&Client{}).Dial.
func Dial(ctx context.Context, node, src, dst netip.AddrPort) (*net.TCPConn, error) {
	var c Client
	return c.Dial(ctx, node, src, dst)
}
