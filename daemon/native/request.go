package native

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"strings"
)

// Protocol constants. Every value here is part of the wire format
// (docs/native-api.md).
const (
	// Magic opens every request.
	Magic = "MLNA"
	// Version is the protocol version this package speaks.
	Version = 1
	// MaxRequestLen bounds a whole request, prefix included, in bytes.
	// Three names at their longest take 8+64+254+64 = 390 bytes; the rest
	// is room for extensions.
	MaxRequestLen = 512
	// MaxNamespaceLen bounds a namespace, a DNS-1123 label.
	MaxNamespaceLen = 63
	// MaxMeshletLen bounds a Meshlet's name, a DNS-1123 subdomain.
	MaxMeshletLen = 253
	// MaxServiceLen bounds a service's name, a DNS-1123 label.
	MaxServiceLen = 63

	prefixLen = 8 // magic, version, flags, body length
	// extCritical marks extension types (0x80-0xff) that a receiver must
	// understand: one that does not refuses the request instead of
	// skipping it, so a later version can add a field whose loss would
	// change the meaning of the request.
	extCritical = 0x80
)

// Request decoding errors. Every error ReadRequest and ParseRequest return
// wraps exactly one of them, or an I/O error of the reader. Each is also
// the sentinel of the matching failure Status (see StatusFor), so
// errors.Is works the same on a local decoding error and on a daemon's
// refusal.
var (
	// ErrBadMagic means the peer does not speak this protocol.
	ErrBadMagic = errors.New("bad magic")
	// ErrBadVersion means the peer speaks another version.
	ErrBadVersion = errors.New("unsupported version")
	// ErrTooLong means the announced length exceeds MaxRequestLen.
	ErrTooLong = errors.New("request too long")
	// ErrMalformed means the request is not well-formed.
	ErrMalformed = errors.New("malformed request")
)

// Request names the service a client wants: the namespace and Meshlet that
// serve it and the service's name within the Meshlet.
type Request struct {
	// Namespace is the serving Meshlet's namespace, a DNS-1123 label.
	Namespace string
	// Meshlet is the serving Meshlet's name, a DNS-1123 subdomain.
	Meshlet string
	// Service is a service of the Meshlet's server side, a DNS-1123 label.
	Service string
}

// String returns "namespace/meshlet/service", the form Dial takes.
func (r Request) String() string { return r.Namespace + "/" + r.Meshlet + "/" + r.Service }

// ParseTarget parses "namespace/meshlet/service".
func ParseTarget(s string) (Request, error) {
	parts := strings.Split(s, "/")
	if len(parts) != 3 {
		return Request{}, fmt.Errorf("%w: target %q is not namespace/meshlet/service", ErrMalformed, s)
	}
	r := Request{Namespace: parts[0], Meshlet: parts[1], Service: parts[2]}
	if err := r.Validate(); err != nil {
		return Request{}, err
	}
	return r, nil
}

// Validate checks the three names' syntax and length. The error wraps
// ErrMalformed.
func (r Request) Validate() error {
	switch {
	case !isLabel(r.Namespace, MaxNamespaceLen):
		return fmt.Errorf("%w: namespace %q is not a DNS-1123 label", ErrMalformed, r.Namespace)
	case !isSubdomain(r.Meshlet, MaxMeshletLen):
		return fmt.Errorf("%w: meshlet %q is not a DNS-1123 subdomain", ErrMalformed, r.Meshlet)
	case !isLabel(r.Service, MaxServiceLen):
		return fmt.Errorf("%w: service %q is not a DNS-1123 label", ErrMalformed, r.Service)
	}
	return nil
}

// AppendBinary appends the encoded request to b.
func (r Request) AppendBinary(b []byte) ([]byte, error) {
	if err := r.Validate(); err != nil {
		return b, fmt.Errorf("encode request: %w", err)
	}
	start := len(b)
	b = append(b, Magic...)
	b = append(b, Version, 0, 0, 0)
	for _, s := range [...]string{r.Namespace, r.Meshlet, r.Service} {
		b = append(b, byte(len(s)))
		b = append(b, s...)
	}
	// Validate bounds every name, so the body always fits in 16 bits
	// and within MaxRequestLen.
	binary.BigEndian.PutUint16(b[start+6:], uint16(len(b)-start-prefixLen))
	return b, nil
}

// MarshalBinary returns the encoded request.
func (r Request) MarshalBinary() ([]byte, error) { return r.AppendBinary(make([]byte, 0, 64)) }

// ReadRequest reads exactly one request from r, and not a byte more: on a
// connection the daemon relays afterwards, every byte the client sends
// after its request belongs to the application. It reads the fixed 8-byte
// prefix, checks it (including the announced length against
// MaxRequestLen) before reading anything else, then reads the body.
//
// ReadRequest sets no deadline; the caller bounds a slow client with one
// on its connection (RequestTimeout).
func ReadRequest(r io.Reader) (Request, error) {
	var buf [MaxRequestLen]byte
	if _, err := io.ReadFull(r, buf[:prefixLen]); err != nil {
		return Request{}, fmt.Errorf("read request: %w", err)
	}
	n, err := checkPrefix(buf[:prefixLen])
	if err != nil {
		return Request{}, err
	}
	if _, err := io.ReadFull(r, buf[prefixLen:n]); err != nil {
		return Request{}, fmt.Errorf("read request: %w", err)
	}
	req, _, err := ParseRequest(buf[:n])
	return req, err
}

// checkPrefix validates the fixed first 8 bytes and returns the length of
// the whole request they announce.
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
	n := prefixLen + int(binary.BigEndian.Uint16(p[6:]))
	if n > MaxRequestLen {
		return 0, fmt.Errorf("%w: %d bytes", ErrTooLong, n)
	}
	return n, nil
}

// ParseRequest decodes the request at the start of b and returns it with
// its length in bytes. A b shorter than the announced length is
// ErrMalformed; bytes after the request are left alone.
func ParseRequest(b []byte) (Request, int, error) {
	if len(b) < prefixLen {
		return Request{}, 0, fmt.Errorf("%w: %d bytes", ErrMalformed, len(b))
	}
	n, err := checkPrefix(b[:prefixLen])
	if err != nil {
		return Request{}, 0, err
	}
	if len(b) < n {
		return Request{}, 0, fmt.Errorf("%w: %d of %d bytes", ErrMalformed, len(b), n)
	}
	p := b[prefixLen:n]
	var names [3]string
	for i := range names {
		if len(p) < 1 || len(p) < 1+int(p[0]) {
			return Request{}, 0, fmt.Errorf("%w: truncated name %d", ErrMalformed, i+1)
		}
		names[i] = string(p[1 : 1+int(p[0])])
		p = p[1+int(p[0]):]
	}
	req := Request{Namespace: names[0], Meshlet: names[1], Service: names[2]}
	if err := req.Validate(); err != nil {
		return Request{}, 0, err
	}
	if err := checkExtensions(p); err != nil {
		return Request{}, 0, err
	}
	return req, n, nil
}

// checkExtensions walks the extensions after the names: type (1 byte),
// length L (1 byte), L bytes. Version 1 defines none; unknown types below
// 0x80 are skipped, unknown critical types (0x80 and up) refuse the
// request.
func checkExtensions(p []byte) error {
	for len(p) > 0 {
		if len(p) < 2 || len(p) < 2+int(p[1]) {
			return fmt.Errorf("%w: truncated extension", ErrMalformed)
		}
		if p[0]&extCritical != 0 {
			return fmt.Errorf("%w: unknown critical extension %#x", ErrMalformed, p[0])
		}
		p = p[2+int(p[1]):]
	}
	return nil
}

// isLabel reports whether s is a DNS-1123 label of at most max bytes:
// lower-case letters, digits and '-', starting and ending with a letter
// or digit. Such a name cannot hold '/', '.', NUL or "..", which is what
// makes it safe as a file name (Listen) and in logs.
func isLabel(s string, max int) bool {
	if len(s) == 0 || len(s) > max || s[0] == '-' || s[len(s)-1] == '-' {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-') {
			return false
		}
	}
	return true
}

// isSubdomain reports whether s is a DNS-1123 subdomain of at most max
// bytes: DNS-1123 labels joined by '.'.
func isSubdomain(s string, max int) bool {
	if len(s) == 0 || len(s) > max {
		return false
	}
	for l := range strings.SplitSeq(s, ".") {
		if !isLabel(l, max) {
			return false
		}
	}
	return true
}
