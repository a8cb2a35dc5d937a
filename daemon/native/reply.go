package native

import (
	"fmt"
	"io"
	"strings"
	"unicode/utf8"
)

// Reply constants. Every value here is part of the wire format.
const (
	// ReplyMagic opens every reply.
	ReplyMagic = "ML"
	// ReplyHeaderLen is the length of a reply's fixed part: magic,
	// version, status, flags, message length. Its layout is the same in
	// every version, so any client can read any daemon's refusal.
	ReplyHeaderLen = 6
	// MaxMessageLen bounds a reply's message, in bytes.
	MaxMessageLen = 255
	// MaxReplyLen bounds a whole reply.
	MaxReplyLen = ReplyHeaderLen + MaxMessageLen

	// FlagHandoff (reply flags, bit 0) says that a connection follows by
	// SCM_RIGHTS (SendConn); only with StatusOK.
	FlagHandoff = 0x01
)

// Reply is the daemon's answer to a request.
type Reply struct {
	// Status is StatusOK or the reason of a refusal.
	Status Status
	// Handoff, with StatusOK, says that the daemon passes the client a
	// connection to the service (SendConn) right after the reply, and
	// leaves the byte path: the client uses that connection and closes
	// the one it dialed.
	Handoff bool
	// Message is a short explanation for people, at most MaxMessageLen
	// bytes of UTF-8; usually empty with StatusOK.
	Message string
	// Version is the version of the reply as read by ReadReply.
	// WriteReply ignores it and always writes Version, which is also
	// what a StatusBadVersion reply must carry: the version the daemon
	// speaks.
	Version uint8
}

// AppendBinary appends the encoded reply to b. The message is made
// printable (invalid UTF-8 and control characters become '?') and cut to
// MaxMessageLen bytes at a character boundary, because a refusal must
// never fail to be sent for the sake of its explanation.
func (r Reply) AppendBinary(b []byte) ([]byte, error) {
	if r.Handoff && r.Status != StatusOK {
		return b, fmt.Errorf("encode reply: handoff with status %s", r.Status)
	}
	var flags byte
	if r.Handoff {
		flags |= FlagHandoff
	}
	msg := cleanMessage(r.Message)
	b = append(b, ReplyMagic...)
	b = append(b, Version, byte(r.Status), flags, byte(len(msg)))
	return append(b, msg...), nil
}

// MarshalBinary returns the encoded reply.
func (r Reply) MarshalBinary() ([]byte, error) {
	return r.AppendBinary(make([]byte, 0, ReplyHeaderLen+len(r.Message)))
}

// WriteReply writes r to w in a single Write, so that it travels as one
// message. With r.Handoff the caller then calls SendConn on the same
// connection; the reply itself carries no file descriptor.
func WriteReply(w io.Writer, r Reply) error {
	b, err := r.MarshalBinary()
	if err != nil {
		return err
	}
	if _, err := w.Write(b); err != nil {
		return fmt.Errorf("write reply: %w", err)
	}
	return nil
}

// ReadReply reads exactly one reply from r, and not a byte more: in the
// relayed case, the service's first bytes may follow right behind it, and
// in the handoff case the byte that carries the connection does (reading
// it without ReceiveConn would make the kernel drop the descriptor). A
// reply of another version is an error wrapping ErrBadVersion, except a
// StatusBadVersion refusal, whose layout every version shares.
func ReadReply(r io.Reader) (Reply, error) {
	var buf [MaxReplyLen]byte
	if _, err := io.ReadFull(r, buf[:ReplyHeaderLen]); err != nil {
		return Reply{}, fmt.Errorf("read reply: %w", err)
	}
	if string(buf[:2]) != ReplyMagic {
		return Reply{}, fmt.Errorf("read reply: %w: % x", ErrBadMagic, buf[:2])
	}
	n := ReplyHeaderLen + int(buf[5])
	if _, err := io.ReadFull(r, buf[ReplyHeaderLen:n]); err != nil {
		return Reply{}, fmt.Errorf("read reply: %w", err)
	}
	rep, _, err := ParseReply(buf[:n])
	return rep, err
}

// ParseReply decodes the reply at the start of b and returns it with its
// length in bytes. Bytes after the reply are left alone.
func ParseReply(b []byte) (Reply, int, error) {
	if len(b) < ReplyHeaderLen {
		return Reply{}, 0, fmt.Errorf("parse reply: %w: %d bytes", ErrMalformed, len(b))
	}
	if string(b[:2]) != ReplyMagic {
		return Reply{}, 0, fmt.Errorf("parse reply: %w: % x", ErrBadMagic, b[:2])
	}
	n := ReplyHeaderLen + int(b[5])
	if len(b) < n {
		return Reply{}, 0, fmt.Errorf("parse reply: %w: %d of %d bytes", ErrMalformed, len(b), n)
	}
	rep := Reply{
		Version: b[2],
		Status:  Status(b[3]),
		Handoff: b[4]&FlagHandoff != 0,
		Message: cleanMessage(string(b[ReplyHeaderLen:n])),
	}
	if rep.Version != Version && rep.Status != StatusBadVersion {
		return Reply{}, 0, fmt.Errorf("parse reply: %w: %d", ErrBadVersion, rep.Version)
	}
	if b[4]&^FlagHandoff != 0 {
		return Reply{}, 0, fmt.Errorf("parse reply: %w: unknown flags %#x", ErrMalformed, b[4])
	}
	if rep.Handoff && rep.Status != StatusOK {
		return Reply{}, 0, fmt.Errorf("parse reply: %w: handoff with status %s", ErrMalformed, rep.Status)
	}
	return rep, n, nil
}

// cleanMessage returns s as printable UTF-8 of at most MaxMessageLen
// bytes: invalid bytes and control characters become '?', and the cut
// falls on a character boundary. The message ends up in error strings
// and logs, where a terminal escape would do harm.
func cleanMessage(s string) string {
	clean := func(s string) bool {
		if len(s) > MaxMessageLen || !utf8.ValidString(s) {
			return false
		}
		for _, c := range s {
			if c < 0x20 || c == 0x7f || 0x80 <= c && c < 0xa0 {
				return false
			}
		}
		return true
	}
	if clean(s) {
		return s
	}
	var b strings.Builder
	for _, c := range strings.ToValidUTF8(s, "?") {
		if c < 0x20 || c == 0x7f || 0x80 <= c && c < 0xa0 {
			c = '?'
		}
		if b.Len()+utf8.RuneLen(c) > MaxMessageLen {
			break
		}
		b.WriteRune(c)
	}
	return b.String()
}
