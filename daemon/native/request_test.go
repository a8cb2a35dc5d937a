package native

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"io"
	"strings"
	"testing"
	"testing/iotest"
)

func TestRequestRoundTrip(t *testing.T) {
	long := strings.Repeat("a", 63)
	tests := []struct {
		name string
		req  Request
	}{
		{"short", Request{"shop", "frontend", "web"}},
		{"digits and dashes", Request{"ns-1", "m-2", "9svc-x"}},
		{"dotted meshlet", Request{"default", "api.v2.shop", "grpc"}},
		{"longest names", Request{long, strings.Repeat(long+".", 3) + strings.Repeat("b", 61), long}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, err := tt.req.MarshalBinary()
			if err != nil {
				t.Fatal(err)
			}
			wantLen := 8 + 3 + len(tt.req.Namespace) + len(tt.req.Meshlet) + len(tt.req.Service)
			if len(b) != wantLen || len(b) > MaxRequestLen {
				t.Errorf("len = %d, want %d (max %d)", len(b), wantLen, MaxRequestLen)
			}
			if got := 8 + int(binary.BigEndian.Uint16(b[6:])); got != len(b) {
				t.Errorf("length field says %d, encoded %d", got, len(b))
			}
			// Application bytes right behind the request stay unread,
			// whatever the reads' sizes.
			for _, r := range []io.Reader{bytes.NewReader(append(b, "app"...)), iotest.OneByteReader(bytes.NewReader(append(b, "app"...)))} {
				got, err := ReadRequest(r)
				if err != nil || got != tt.req {
					t.Fatalf("decoded %+v, %v; want %+v", got, err, tt.req)
				}
				rest, _ := io.ReadAll(r)
				if string(rest) != "app" {
					t.Errorf("left %q behind the request, want \"app\"", rest)
				}
			}
			if got, n, err := ParseRequest(append(b, 0xff)); err != nil || got != tt.req || n != len(b) {
				t.Errorf("ParseRequest = %+v, %d, %v", got, n, err)
			}
		})
	}
}

func TestRequestExample(t *testing.T) {
	// The annotated example of docs/native-api.md.
	b, err := Request{"shop", "frontend", "web"}.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	want := "4d4c4e41 01 00 0012 04 73686f70 08 66726f6e74656e64 03 776562"
	if got := spacedHex(b, 4, 1, 1, 2, 1, 4, 1, 8, 1, 3); got != want {
		t.Errorf("encoded\n%s\nwant\n%s", got, want)
	}
}

// spacedHex prints b in hex, a space after each group of the given sizes.
func spacedHex(b []byte, sizes ...int) string {
	var parts []string
	for _, n := range sizes {
		if n > len(b) {
			n = len(b)
		}
		parts = append(parts, hex.EncodeToString(b[:n]))
		b = b[n:]
	}
	return strings.Join(parts, " ")
}

// raw builds a request with the given version, flags and body; the length
// field is the body's unless length >= 0.
func raw(version, flags byte, length int, body ...byte) []byte {
	if length < 0 {
		length = len(body)
	}
	b := append([]byte(Magic), version, flags, byte(length>>8), byte(length))
	return append(b, body...)
}

// names encodes length-prefixed strings.
func names(ss ...string) []byte {
	var b []byte
	for _, s := range ss {
		b = append(b, byte(len(s)))
		b = append(b, s...)
	}
	return b
}

func TestReadRequestErrors(t *testing.T) {
	good := names("shop", "frontend", "web")
	tests := []struct {
		name string
		in   []byte
		want error
	}{
		{"empty", nil, io.EOF},
		{"short prefix", []byte("MLNA\x01"), io.ErrUnexpectedEOF},
		{"http", []byte("GET / HTTP/1.1\r\n\r\n"), ErrBadMagic},
		{"tunnel magic", append([]byte("MLTN"), 2, 0, 0, 9), ErrBadMagic},
		{"version 0", raw(0, 0, -1, good...), ErrBadVersion},
		{"version 2", raw(2, 0, -1, good...), ErrBadVersion},
		{"flags", raw(1, 1, -1, good...), ErrMalformed},
		{"too long", raw(1, 0, MaxRequestLen-7), ErrTooLong},
		{"longest length", raw(1, 0, 0xffff), ErrTooLong},
		{"body cut short", raw(1, 0, len(good), good[:5]...), io.ErrUnexpectedEOF},
		{"empty body", raw(1, 0, -1), ErrMalformed},
		{"two names", raw(1, 0, -1, names("shop", "frontend")...), ErrMalformed},
		{"name past the body", raw(1, 0, -1, append(names("shop", "frontend"), 9, 'w')...), ErrMalformed},
		{"empty namespace", raw(1, 0, -1, names("", "frontend", "web")...), ErrMalformed},
		{"upper case", raw(1, 0, -1, names("Shop", "frontend", "web")...), ErrMalformed},
		{"slash in service", raw(1, 0, -1, names("shop", "frontend", "../web")...), ErrMalformed},
		{"dot in service", raw(1, 0, -1, names("shop", "frontend", "web.x")...), ErrMalformed},
		{"dash first", raw(1, 0, -1, names("-shop", "frontend", "web")...), ErrMalformed},
		{"empty meshlet label", raw(1, 0, -1, names("shop", "front..end", "web")...), ErrMalformed},
		{"nul", raw(1, 0, -1, names("shop", "front\x00", "web")...), ErrMalformed},
		{"namespace of 64", raw(1, 0, -1, names(strings.Repeat("a", 64), "m", "web")...), ErrMalformed},
		{"truncated extension", raw(1, 0, -1, append(good, 1)...), ErrMalformed},
		{"extension past the body", raw(1, 0, -1, append(good, 1, 5, 'x')...), ErrMalformed},
		{"critical extension", raw(1, 0, -1, append(good, 0x80, 0)...), ErrMalformed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := bytes.NewReader(append(tt.in, "app"...))
			if tt.want == io.EOF || tt.want == io.ErrUnexpectedEOF {
				r = bytes.NewReader(tt.in) // the stream ends there
			}
			req, err := ReadRequest(r)
			if !errors.Is(err, tt.want) {
				t.Fatalf("ReadRequest = %+v, %v; want %v", req, err, tt.want)
			}
			// Never past the announced request: at most the prefix when
			// the prefix is refused, else prefix and body.
			consumed := int(r.Size()) - r.Len()
			if limit := announced(tt.in); consumed > limit {
				t.Errorf("consumed %d bytes, the request announced %d", consumed, limit)
			}
		})
	}
}

// announced returns how many bytes a reader may consume of in: the prefix,
// plus the body when the prefix is acceptable.
func announced(in []byte) int {
	if len(in) < prefixLen {
		return len(in)
	}
	n, err := checkPrefix(in[:prefixLen])
	if err != nil {
		return prefixLen
	}
	return n
}

func TestRequestExtensionsSkipped(t *testing.T) {
	// A later version's optional extensions (types below 0x80) do not
	// stop a version 1 daemon.
	body := append(names("shop", "frontend", "web"), 1, 3, 'a', 'b', 'c', 0x7f, 0)
	got, err := ReadRequest(bytes.NewReader(raw(1, 0, -1, body...)))
	if err != nil || got != (Request{"shop", "frontend", "web"}) {
		t.Fatalf("ReadRequest = %+v, %v", got, err)
	}
}

func TestParseTarget(t *testing.T) {
	if got, err := ParseTarget("shop/frontend/web"); err != nil || got != (Request{"shop", "frontend", "web"}) {
		t.Errorf("ParseTarget = %+v, %v", got, err)
	}
	if got := (Request{"shop", "frontend", "web"}).String(); got != "shop/frontend/web" {
		t.Errorf("String = %q", got)
	}
	for _, s := range []string{"", "web", "frontend/web", "shop/frontend/web/x", "shop//web", "/frontend/web",
		"shop/frontend/", "Shop/frontend/web", "shop/frontend/web ", "shop/frontend/../web", "shop/a_b/web"} {
		if got, err := ParseTarget(s); !errors.Is(err, ErrMalformed) {
			t.Errorf("ParseTarget(%q) = %+v, %v; want ErrMalformed", s, got, err)
		}
	}
}

func TestRequestEncodeErrors(t *testing.T) {
	for _, r := range []Request{{}, {"shop", "frontend", ""}, {"shop", strings.Repeat("a", 254), "web"}, {"shop", "frontend", "web/x"}} {
		if b, err := r.MarshalBinary(); !errors.Is(err, ErrMalformed) {
			t.Errorf("%+v encoded: % x, %v", r, b, err)
		}
	}
}
