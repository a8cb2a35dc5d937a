package native

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"
	"testing/iotest"
	"unicode/utf8"
)

// The seed corpora live in testdata/fuzz/<name>, so `go test` replays
// them; `go test -fuzz FuzzReadRequest` explores from there.

// FuzzReadRequest: ReadRequest never panics, never reads past the
// request its prefix announces (so a relaying daemon loses no application
// byte), answers the same whatever the sizes of the reads, and what it
// accepts is valid, re-encodes to a request that decodes the same, and
// maps to a status.
func FuzzReadRequest(f *testing.F) {
	good, _ := Request{"shop", "frontend", "web"}.MarshalBinary()
	f.Add(good)
	f.Fuzz(func(t *testing.T, in []byte) {
		r := bytes.NewReader(in)
		req, err := ReadRequest(r)
		consumed := len(in) - r.Len()
		if limit := announced(in); consumed > limit {
			t.Fatalf("consumed %d bytes, the request announced %d", consumed, limit)
		}
		req1, err1 := ReadRequest(iotest.OneByteReader(bytes.NewReader(in)))
		if req1 != req || (err == nil) != (err1 == nil) {
			t.Fatalf("one byte at a time: %+v, %v; at once: %+v, %v", req1, err1, req, err)
		}
		preq, n, perr := ParseRequest(in)
		if err != nil {
			if StatusFor(err) == StatusOK || StatusFor(err) == StatusInternal {
				t.Fatalf("error %v maps to %v", err, StatusFor(err))
			}
			if perr == nil {
				t.Fatalf("ParseRequest accepted what ReadRequest refused: %v", err)
			}
			return
		}
		if perr != nil || preq != req || n != consumed {
			t.Fatalf("ParseRequest = %+v, %d, %v; ReadRequest %+v, %d", preq, n, perr, req, consumed)
		}
		if consumed > MaxRequestLen {
			t.Fatalf("accepted %d bytes", consumed)
		}
		if req.Validate() != nil || strings.ContainsAny(req.Service, "/.") {
			t.Fatalf("accepted invalid %+v", req)
		}
		b, err := req.MarshalBinary()
		if err != nil {
			t.Fatalf("accepted %+v does not encode: %v", req, err)
		}
		if again, err := ReadRequest(bytes.NewReader(b)); err != nil || again != req {
			t.Fatalf("round trip %+v -> %+v, %v", req, again, err)
		}
		// Without extensions, the encoding is the only one.
		if len(b) == consumed && !bytes.Equal(b, in[:consumed]) {
			t.Fatalf("two encodings of %+v: % x and % x", req, b, in[:consumed])
		}
	})
}

// FuzzReadReply: ReadReply never panics, never reads past the reply its
// header announces, and what it accepts is consistent (handoff only with
// OK, a printable message within MaxMessageLen, version 1 unless a
// version refusal) and survives a round trip.
func FuzzReadReply(f *testing.F) {
	ok, _ := Reply{}.MarshalBinary()
	f.Add(ok)
	f.Fuzz(func(t *testing.T, in []byte) {
		r := bytes.NewReader(in)
		rep, err := ReadReply(r)
		consumed := len(in) - r.Len()
		limit := min(len(in), ReplyHeaderLen)
		if len(in) >= ReplyHeaderLen && string(in[:2]) == ReplyMagic {
			limit = ReplyHeaderLen + int(in[5])
		}
		if consumed > limit {
			t.Fatalf("consumed %d bytes, the reply announced %d", consumed, limit)
		}
		rep1, err1 := ReadReply(iotest.OneByteReader(bytes.NewReader(in)))
		if rep1 != rep || (err == nil) != (err1 == nil) {
			t.Fatalf("one byte at a time: %+v, %v; at once: %+v, %v", rep1, err1, rep, err)
		}
		if err != nil {
			if !errors.Is(err, io.EOF) && !errors.Is(err, io.ErrUnexpectedEOF) &&
				!errors.Is(err, ErrBadMagic) && !errors.Is(err, ErrBadVersion) && !errors.Is(err, ErrMalformed) {
				t.Fatalf("unexpected error %v", err)
			}
			return
		}
		if rep.Handoff && rep.Status != StatusOK {
			t.Fatalf("accepted a handoff with %v", rep.Status)
		}
		if rep.Version != Version && rep.Status != StatusBadVersion {
			t.Fatalf("accepted version %d with %v", rep.Version, rep.Status)
		}
		if len(rep.Message) > MaxMessageLen || !utf8.ValidString(rep.Message) || cleanMessage(rep.Message) != rep.Message {
			t.Fatalf("message %q is not clean", rep.Message)
		}
		b, err := rep.MarshalBinary()
		if err != nil {
			t.Fatalf("accepted %+v does not encode: %v", rep, err)
		}
		again, err := ReadReply(bytes.NewReader(b))
		rep.Version = Version // WriteReply always writes its own
		if err != nil || again != rep {
			t.Fatalf("round trip %+v -> %+v, %v", rep, again, err)
		}
	})
}
