package native

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"testing"
	"testing/iotest"
	"unicode/utf8"
)

func TestReplyRoundTrip(t *testing.T) {
	replies := []Reply{{}, {Handoff: true}, {Message: "relayed via n2"}}
	for s := StatusBadVersion; s <= StatusInternal; s++ {
		replies = append(replies, Reply{Status: s, Message: "because " + s.String()}, Reply{Status: s})
	}
	replies = append(replies, Reply{Status: 200, Message: "from a later version"})
	for _, rep := range replies {
		b, err := rep.MarshalBinary()
		if err != nil {
			t.Fatalf("%+v: %v", rep, err)
		}
		if len(b) != ReplyHeaderLen+len(rep.Message) {
			t.Errorf("%+v: %d bytes", rep, len(b))
		}
		for _, r := range []io.Reader{bytes.NewReader(append(b, "F"...)), iotest.OneByteReader(bytes.NewReader(append(b, "F"...)))} {
			got, err := ReadReply(r)
			want := rep
			want.Version = Version
			if err != nil || got != want {
				t.Fatalf("decoded %+v, %v; want %+v", got, err, want)
			}
			// The byte behind the reply (the handoff marker, or the
			// service's first byte) is left for its reader.
			if rest, _ := io.ReadAll(r); string(rest) != "F" {
				t.Errorf("%+v: left %q behind", rep, rest)
			}
		}
	}
}

func TestReplyExamples(t *testing.T) {
	// The annotated examples of docs/native-api.md.
	tests := []struct {
		rep  Reply
		want string
	}{
		{Reply{}, "4d4c 01 00 00 00"},
		{Reply{Handoff: true}, "4d4c 01 00 01 00"},
		{Reply{Status: StatusAllFull, Message: "3 of 3 at maxConn"}, "4d4c 01 08 00 11 33206f662033206174206d6178436f6e6e"},
		{Reply{Status: StatusBadVersion}, "4d4c 01 01 00 00"},
	}
	for _, tt := range tests {
		b, err := tt.rep.MarshalBinary()
		if err != nil {
			t.Fatal(err)
		}
		if got := spacedHex(b, 2, 1, 1, 1, 1, 255); strings.TrimSuffix(got, " ") != tt.want {
			t.Errorf("%+v encoded\n%s\nwant\n%s", tt.rep, got, tt.want)
		}
	}
}

func TestReplyMessageCleaned(t *testing.T) {
	tests := []struct{ in, want string }{
		{"plain ascii", "plain ascii"},
		{"naïve ünïcode ✓", "naïve ünïcode ✓"},
		{"esc\x1b[31mred", "esc?[31mred"},
		{"new\nline\ttab\x7f", "new?line?tab?"},
		{"c1 \u0085 control", "c1 ? control"},
		{"bad \xff\xfe utf8", "bad ? utf8"},
		{strings.Repeat("x", 300), strings.Repeat("x", 255)},
		{strings.Repeat("x", 254) + "é", strings.Repeat("x", 254)},
	}
	for _, tt := range tests {
		b, err := (Reply{Status: StatusInternal, Message: tt.in}).MarshalBinary()
		if err != nil {
			t.Fatal(err)
		}
		got, err := ReadReply(bytes.NewReader(b))
		if err != nil || got.Message != tt.want {
			t.Errorf("message %q arrived as %q, %v; want %q", tt.in, got.Message, err, tt.want)
		}
	}
	// A daemon that does not clean: the client does.
	b := append([]byte("ML\x01\x02\x00\x05"), "a\x1bb\xffc"...)
	if got, err := ReadReply(bytes.NewReader(b)); err != nil || got.Message != "a?b?c" || !utf8.ValidString(got.Message) {
		t.Errorf("raw message arrived as %q, %v", got.Message, err)
	}
}

func TestReadReplyErrors(t *testing.T) {
	tests := []struct {
		name string
		in   []byte
		want error
	}{
		{"empty", nil, io.EOF},
		{"short", []byte("ML\x01\x00"), io.ErrUnexpectedEOF},
		{"message cut short", []byte("ML\x01\x02\x00\x09abc"), io.ErrUnexpectedEOF},
		{"bad magic", []byte("HTTP/1.1 400"), ErrBadMagic},
		{"version 2", []byte("ML\x02\x00\x00\x00"), ErrBadVersion},
		{"version 0", []byte("ML\x00\x05\x00\x00"), ErrBadVersion},
		{"unknown flags", []byte("ML\x01\x00\x02\x00"), ErrMalformed},
		{"handoff with refusal", []byte("ML\x01\x08\x01\x00"), ErrMalformed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := bytes.NewReader(tt.in)
			if got, err := ReadReply(r); !errors.Is(err, tt.want) {
				t.Fatalf("ReadReply = %+v, %v; want %v", got, err, tt.want)
			}
		})
	}
	if b, err := (Reply{Status: StatusAllFull, Handoff: true}).MarshalBinary(); err == nil {
		t.Errorf("handoff with a refusal encoded: % x", b)
	}
}

func TestBadVersionReplyOfAnyVersion(t *testing.T) {
	// A later daemon that does not speak version 1 says so in the layout
	// every version shares, with the version it speaks.
	rep, err := ReadReply(bytes.NewReader([]byte("ML\x07\x01\x00\x04v7!!")))
	if err != nil || rep.Status != StatusBadVersion || rep.Version != 7 || rep.Message != "v7!!" {
		t.Fatalf("ReadReply = %+v, %v", rep, err)
	}
	e := &StatusError{Status: rep.Status, Version: rep.Version}
	if !strings.Contains(e.Error(), "daemon speaks 7, client 1") {
		t.Errorf("Error() = %q", e.Error())
	}
}

func TestStatusError(t *testing.T) {
	sentinels := map[Status]error{
		StatusBadVersion: ErrBadVersion, StatusMalformed: ErrMalformed, StatusTooLong: ErrTooLong,
		StatusTimeout: ErrRequestTimeout, StatusUnknownService: ErrUnknownService,
		StatusNotAllowed: ErrNotAllowed, StatusNoInstance: ErrNoInstance, StatusAllFull: ErrAllFull,
		StatusUnreachable: ErrUnreachable, StatusInternal: ErrInternal, 42: ErrRefused,
	}
	for s, sentinel := range sentinels {
		err := fmt.Errorf("native dial x: %w", &StatusError{Status: s, Version: Version, Message: "why"})
		var se *StatusError
		if !errors.As(err, &se) || se.Status != s || se.Message != "why" {
			t.Errorf("%v: errors.As gave %+v", s, se)
		}
		if !errors.Is(err, sentinel) || !errors.Is(err, ErrRefused) {
			t.Errorf("%v: %q does not match %v and ErrRefused", s, err, sentinel)
		}
		for other, o := range sentinels {
			if other != s && o != ErrRefused && errors.Is(err, o) {
				t.Errorf("%v also matches %v", s, o)
			}
		}
		if StatusFor(sentinel) != s && s != 42 {
			t.Errorf("StatusFor(%v) = %v, want %v", sentinel, StatusFor(sentinel), s)
		}
	}
	if got := (&StatusError{Status: StatusAllFull, Message: "3 of 3"}).Error(); got != "refused: all instances full: 3 of 3" {
		t.Errorf("Error() = %q", got)
	}
	if got := Status(42).String(); got != "status 42" {
		t.Errorf("String() = %q", got)
	}
}

func TestStatusFor(t *testing.T) {
	_, badMagic := ReadRequest(strings.NewReader("GET / HTTP/1.1\r\n"))
	_, tooLong := ReadRequest(bytes.NewReader(raw(1, 0, 1000)))
	_, short := ReadRequest(bytes.NewReader(raw(1, 0, 10, 1, 2)))
	tests := []struct {
		err  error
		want Status
	}{
		{nil, StatusOK},
		{badMagic, StatusMalformed},
		{tooLong, StatusTooLong},
		{short, StatusMalformed},
		{fmt.Errorf("read request: %w", os.ErrDeadlineExceeded), StatusTimeout},
		{fmt.Errorf("pick: %w: web", ErrAllFull), StatusAllFull},
		{fmt.Errorf("policy: %w", ErrNotAllowed), StatusNotAllowed},
		{errors.New("something else"), StatusInternal},
	}
	for _, tt := range tests {
		if got := StatusFor(tt.err); got != tt.want {
			t.Errorf("StatusFor(%v) = %v, want %v", tt.err, got, tt.want)
		}
	}
}
