package tunnel

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net/netip"
)

// Protocol constants.
const (
	// Magic opens every request header.
	Magic = "MLTN"
	// Version is the protocol version this package speaks: 2, inside
	// mutual TLS 1.3. Version 1 was the same header in plaintext; a server
	// of version 2 never sees it, because the TLS handshake fails first.
	Version = 2
	// MaxHeaderLen bounds a request header, in bytes.
	MaxHeaderLen = 1024
	// ReplyLen is the length of the server's reply.
	ReplyLen = 4

	prefixLen   = 8 // magic, version, flags, length
	replyMagic0 = 'M'
	replyMagic1 = 'L'
)

// Header decoding errors. Every error ReadHeader and ParseHeader return
// wraps exactly one of them.
var (
	// ErrBadMagic means the peer does not speak this protocol.
	ErrBadMagic = errors.New("bad magic")
	// ErrBadVersion means the peer speaks another version.
	ErrBadVersion = errors.New("unsupported version")
	// ErrTooLong means the announced header length exceeds MaxHeaderLen.
	ErrTooLong = errors.New("header too long")
	// ErrMalformed means the header is not well-formed.
	ErrMalformed = errors.New("malformed header")
)

// Header is a decoded request header.
type Header struct {
	// Dst is the application's address, on the server's node.
	Dst netip.AddrPort
	// Src is the client pod's address; the zero value when not sent.
	Src netip.AddrPort
	// Service is the name of the service the client addressed (extension
	// ExtService), empty for a connection to a pod address. The server
	// uses it to find the destination pod's unix socket.
	Service string
}

// Extension types.
const (
	// ExtService carries Header.Service: 1 to 255 bytes of UTF-8.
	ExtService = 1
)

// AppendBinary appends the encoded header to b.
func (h Header) AppendBinary(b []byte) ([]byte, error) {
	if !h.Dst.IsValid() || h.Dst.Port() == 0 {
		return b, fmt.Errorf("encode header: invalid destination %v", h.Dst)
	}
	if h.Src.IsValid() && h.Src.Addr().Zone() != "" || h.Dst.Addr().Zone() != "" {
		return b, fmt.Errorf("encode header: zoned addresses are not supported")
	}
	if len(h.Service) > 255 {
		return b, fmt.Errorf("encode header: service name of %d bytes", len(h.Service))
	}
	start := len(b)
	b = append(b, Magic...)
	b = append(b, Version, 0, 0, 0)
	b = appendAddrPort(b, h.Dst)
	if h.Src.IsValid() {
		b = appendAddrPort(b, h.Src)
	} else {
		b = append(b, 0)
	}
	if h.Service != "" {
		b = append(b, ExtService, byte(len(h.Service)))
		b = append(b, h.Service...)
	}
	binary.BigEndian.PutUint16(b[start+6:], uint16(len(b)-start))
	return b, nil
}

// MarshalBinary returns the encoded header.
func (h Header) MarshalBinary() ([]byte, error) { return h.AppendBinary(make([]byte, 0, 48)) }

func appendAddrPort(b []byte, ap netip.AddrPort) []byte {
	a := ap.Addr().Unmap()
	if a.Is4() {
		b = append(b, 4)
	} else {
		b = append(b, 6)
	}
	b = append(b, a.AsSlice()...)
	return binary.BigEndian.AppendUint16(b, ap.Port())
}

// ReadHeader reads exactly one request header from r, and not a byte more.
func ReadHeader(r io.Reader) (Header, error) {
	var buf [MaxHeaderLen]byte
	if _, err := io.ReadFull(r, buf[:prefixLen]); err != nil {
		return Header{}, fmt.Errorf("read header: %w", err)
	}
	n, err := checkPrefix(buf[:prefixLen])
	if err != nil {
		return Header{}, err
	}
	if _, err := io.ReadFull(r, buf[prefixLen:n]); err != nil {
		return Header{}, fmt.Errorf("read header: %w", err)
	}
	h, _, err := ParseHeader(buf[:n])
	return h, err
}

// checkPrefix validates the fixed first 8 bytes and returns the header
// length they announce.
func checkPrefix(p []byte) (int, error) {
	if string(p[:4]) != Magic {
		return 0, fmt.Errorf("%w: % x", ErrBadMagic, p[:4])
	}
	if p[4] != Version {
		return 0, fmt.Errorf("%w: %d", ErrBadVersion, p[4])
	}
	if p[5] != 0 {
		return 0, fmt.Errorf("%w: unknown flags %#x", ErrMalformed, p[5])
	}
	n := int(binary.BigEndian.Uint16(p[6:]))
	if n > MaxHeaderLen {
		return 0, fmt.Errorf("%w: %d bytes", ErrTooLong, n)
	}
	if n <= prefixLen {
		return 0, fmt.Errorf("%w: length %d", ErrMalformed, n)
	}
	return n, nil
}

// ParseHeader decodes the request header at the start of b and returns it
// with its length in bytes. A b shorter than the announced length is
// ErrMalformed.
func ParseHeader(b []byte) (Header, int, error) {
	if len(b) < prefixLen {
		return Header{}, 0, fmt.Errorf("%w: %d bytes", ErrMalformed, len(b))
	}
	n, err := checkPrefix(b[:prefixLen])
	if err != nil {
		return Header{}, 0, err
	}
	if len(b) < n {
		return Header{}, 0, fmt.Errorf("%w: %d of %d bytes", ErrMalformed, len(b), n)
	}
	p := b[prefixLen:n]
	var h Header
	var ok bool
	if h.Dst, p, ok = readAddrPort(p); !ok || !h.Dst.IsValid() || h.Dst.Port() == 0 {
		return Header{}, 0, fmt.Errorf("%w: bad destination", ErrMalformed)
	}
	if h.Src, p, ok = readAddrPort(p); !ok {
		return Header{}, 0, fmt.Errorf("%w: bad source", ErrMalformed)
	}
	for len(p) > 0 {
		if len(p) < 2 || len(p) < 2+int(p[1]) {
			return Header{}, 0, fmt.Errorf("%w: truncated extension", ErrMalformed)
		}
		// Unknown types are skipped.
		if p[0] == ExtService {
			if p[1] == 0 {
				return Header{}, 0, fmt.Errorf("%w: empty service", ErrMalformed)
			}
			h.Service = string(p[2 : 2+int(p[1])])
		}
		p = p[2+int(p[1]):]
	}
	return h, n, nil
}

// readAddrPort reads family, address and port; family 0 is the zero
// AddrPort with no address or port bytes.
func readAddrPort(p []byte) (netip.AddrPort, []byte, bool) {
	if len(p) < 1 {
		return netip.AddrPort{}, p, false
	}
	var size int
	switch p[0] {
	case 0:
		return netip.AddrPort{}, p[1:], true
	case 4:
		size = 4
	case 6:
		size = 16
	default:
		return netip.AddrPort{}, p, false
	}
	if len(p) < 1+size+2 {
		return netip.AddrPort{}, p, false
	}
	a, _ := netip.AddrFromSlice(p[1 : 1+size])
	a = a.Unmap() // one form per address: ::ffff:a.b.c.d is a.b.c.d
	port := binary.BigEndian.Uint16(p[1+size:])
	return netip.AddrPortFrom(a, port), p[1+size+2:], true
}

// Status is the server's answer to a request header.
type Status uint8

// Statuses. Values are part of the wire format.
const (
	// StatusOK: connected to the application; bytes flow from now on.
	StatusOK Status = 0
	// StatusBadVersion: the server does not speak the request's version.
	StatusBadVersion Status = 1
	// StatusMalformed: the request header was malformed.
	StatusMalformed Status = 2
	// StatusRefused: the application refused the connection.
	StatusRefused Status = 3
	// StatusUnreachable: the application was unreachable or timed out.
	StatusUnreachable Status = 4
	// StatusForbidden: the destination is not served by this node.
	StatusForbidden Status = 5
	// StatusFailed: any other failure to reach the application.
	StatusFailed Status = 6
	// StatusDenied: the destination's access control refused the
	// source (version 2).
	StatusDenied Status = 7
	// StatusFull: the destination pod is at its connection limit for the
	// service (version 2).
	StatusFull Status = 8
)

// String returns the status's name.
func (s Status) String() string {
	switch s {
	case StatusOK:
		return "ok"
	case StatusBadVersion:
		return "unsupported version"
	case StatusMalformed:
		return "malformed header"
	case StatusRefused:
		return "target refused"
	case StatusUnreachable:
		return "target unreachable"
	case StatusForbidden:
		return "target not served here"
	case StatusFailed:
		return "target dial failed"
	case StatusDenied:
		return "denied by access policy"
	case StatusFull:
		return "target at its connection limit"
	}
	return fmt.Sprintf("status %d", uint8(s))
}

func reply(s Status) [ReplyLen]byte {
	return [ReplyLen]byte{replyMagic0, replyMagic1, Version, byte(s)}
}

// StatusError is a failure status received from the server.
type StatusError struct {
	// Status is the failure the server reported.
	Status Status
	// Version is the version of the server's reply.
	Version uint8
}

// Error returns "tunnel: <status>".
func (e *StatusError) Error() string {
	if e.Status == StatusBadVersion {
		return fmt.Sprintf("tunnel: %s (server speaks %d, client %d)", e.Status, e.Version, Version)
	}
	return "tunnel: " + e.Status.String()
}
