package tunnel

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"net/netip"
	"testing"
)

func ap(s string) netip.AddrPort { return netip.MustParseAddrPort(s) }

func TestHeaderRoundTrip(t *testing.T) {
	tests := []struct {
		name    string
		h       Header
		wantLen int
	}{
		{"v4 with source", Header{Dst: ap("198.19.2.2:8080"), Src: ap("198.19.1.5:40000")}, 8 + 7 + 7},
		{"v4 no source", Header{Dst: ap("198.19.2.2:8080")}, 8 + 7 + 1},
		{"v6 both", Header{Dst: ap("[fd00:2::2]:443"), Src: ap("[fd00:1::5]:1")}, 8 + 19 + 19},
		{"mixed families", Header{Dst: ap("[fd00:2::2]:443"), Src: ap("10.0.0.1:5")}, 8 + 19 + 7},
		{"v4-mapped encodes as v4", Header{Dst: ap("[::ffff:10.1.2.3]:80")}, 8 + 7 + 1},
		{"service extension", Header{Dst: ap("198.19.2.2:8080"), Src: ap("198.19.1.5:1"), Service: "web"}, 8 + 7 + 7 + 2 + 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, err := tt.h.MarshalBinary()
			if err != nil {
				t.Fatal(err)
			}
			if len(b) != tt.wantLen {
				t.Errorf("len = %d, want %d", len(b), tt.wantLen)
			}
			if got := int(binary.BigEndian.Uint16(b[6:])); got != len(b) {
				t.Errorf("length field %d, encoded %d", got, len(b))
			}
			// Trailing bytes (application data) are not consumed.
			r := bytes.NewReader(append(b, "app"...))
			got, err := ReadHeader(r)
			if err != nil {
				t.Fatal(err)
			}
			want := Header{Dst: unmap(tt.h.Dst), Src: unmap(tt.h.Src), Service: tt.h.Service}
			if got != want {
				t.Errorf("decoded %+v, want %+v", got, want)
			}
			if r.Len() != 3 {
				t.Errorf("ReadHeader consumed %d bytes past the header", 3-r.Len())
			}
		})
	}
}

func unmap(a netip.AddrPort) netip.AddrPort {
	if !a.IsValid() {
		return a
	}
	return netip.AddrPortFrom(a.Addr().Unmap(), a.Port())
}

func TestHeaderEncodeErrors(t *testing.T) {
	for _, h := range []Header{
		{},
		{Dst: ap("10.0.0.1:0")},
		{Dst: ap("[fe80::1%eth0]:80")},
	} {
		if b, err := h.MarshalBinary(); err == nil {
			t.Errorf("%+v encoded: % x", h, b)
		}
	}
}

// hdr builds raw header bytes with a correct length field unless length >= 0.
func hdr(version, flags byte, length int, body ...byte) []byte {
	b := append([]byte(Magic), version, flags, 0, 0)
	b = append(b, body...)
	if length < 0 {
		length = len(b)
	}
	binary.BigEndian.PutUint16(b[6:], uint16(length))
	return b
}

var (
	dstV4 = []byte{4, 10, 0, 0, 1, 0x1f, 0x90}
	noSrc = []byte{0}
)

func cat(bs ...[]byte) []byte { return bytes.Join(bs, nil) }

func TestHeaderDecodeErrors(t *testing.T) {
	tests := []struct {
		name string
		in   []byte
		want error
	}{
		{"empty", nil, io.EOF},
		{"short prefix", []byte("MLT"), io.ErrUnexpectedEOF},
		{"bad magic", append([]byte("GET / HTTP/1.1\r\n"), 0), ErrBadMagic},
		{"bad version", hdr(1, 0, -1, cat(dstV4, noSrc)...), ErrBadVersion},
		{"unknown flags", hdr(Version, 1, -1, cat(dstV4, noSrc)...), ErrMalformed},
		{"too long", hdr(Version, 0, MaxHeaderLen+1, cat(dstV4, noSrc)...), ErrTooLong},
		{"max length", hdr(Version, 0, 0xffff), ErrTooLong},
		{"length covers prefix only", hdr(Version, 0, 8), ErrMalformed},
		{"length below prefix", hdr(Version, 0, 3), ErrMalformed},
		{"body shorter than length", hdr(Version, 0, 40, cat(dstV4, noSrc)...), io.ErrUnexpectedEOF},
		{"no destination", hdr(Version, 0, -1, noSrc...), ErrMalformed},
		{"bad family", hdr(Version, 0, -1, cat([]byte{5, 1, 2, 3, 4, 0, 80}, noSrc)...), ErrMalformed},
		{"truncated address", hdr(Version, 0, -1, 6, 1, 2, 3), ErrMalformed},
		{"port zero", hdr(Version, 0, -1, cat([]byte{4, 10, 0, 0, 1, 0, 0}, noSrc)...), ErrMalformed},
		{"missing source family", hdr(Version, 0, -1, dstV4...), ErrMalformed},
		{"bad source family", hdr(Version, 0, -1, cat(dstV4, []byte{9})...), ErrMalformed},
		{"truncated extension", hdr(Version, 0, -1, cat(dstV4, noSrc, []byte{7, 5, 1})...), ErrMalformed},
		{"lone extension type", hdr(Version, 0, -1, cat(dstV4, noSrc, []byte{7})...), ErrMalformed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h, err := ReadHeader(bytes.NewReader(tt.in))
			if !errors.Is(err, tt.want) {
				t.Fatalf("ReadHeader = %+v, %v; want %v", h, err, tt.want)
			}
			if _, _, err := ParseHeader(tt.in); err == nil {
				t.Fatalf("ParseHeader accepted it")
			}
		})
	}
}

func TestHeaderExtensionsSkipped(t *testing.T) {
	in := hdr(Version, 0, -1, cat(dstV4, noSrc, []byte{7, 3, 'a', 'b', 'c', 0, 0})...)
	h, n, err := ParseHeader(append(in, "app"...))
	if err != nil {
		t.Fatal(err)
	}
	if n != len(in) || h.Dst != ap("10.0.0.1:8080") || h.Src.IsValid() {
		t.Fatalf("got %+v n=%d", h, n)
	}
}

func FuzzParseHeader(f *testing.F) {
	for _, h := range []Header{
		{Dst: ap("198.19.2.2:8080"), Src: ap("198.19.1.5:40000")},
		{Dst: ap("[fd00:2::2]:443")},
	} {
		b, _ := h.MarshalBinary()
		f.Add(b)
	}
	f.Add(hdr(Version, 0, -1, cat(dstV4, noSrc, []byte{7, 3, 'a', 'b', 'c'})...))
	f.Add(hdr(Version, 0, 0xffff))
	f.Add(hdr(1, 0, -1, cat(dstV4, noSrc)...))
	f.Add(hdr(Version, 0, -1, cat([]byte{6, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 10, 0, 0, 1, 0, 80}, noSrc)...))
	f.Add([]byte("GET / HTTP/1.1\r\n\r\n"))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		h, n, err := ParseHeader(b)
		rh, rerr := ReadHeader(bytes.NewReader(b))
		if err != nil {
			if rerr == nil {
				t.Fatalf("ReadHeader accepted what ParseHeader rejected (%v)", err)
			}
			return
		}
		if rerr != nil || rh != h {
			t.Fatalf("ReadHeader = %+v, %v; ParseHeader = %+v", rh, rerr, h)
		}
		if n > len(b) || n > MaxHeaderLen || n <= prefixLen {
			t.Fatalf("length %d of %d", n, len(b))
		}
		if !h.Dst.IsValid() || h.Dst.Port() == 0 {
			t.Fatalf("accepted destination %v", h.Dst)
		}
		enc, err := h.MarshalBinary()
		if err != nil {
			t.Fatalf("re-encode %+v: %v", h, err)
		}
		h2, _, err := ParseHeader(enc)
		if err != nil || h2 != h {
			t.Fatalf("round trip %+v -> %+v, %v", h, h2, err)
		}
	})
}

// TestWireExample pins the encoding to the example in docs/tunnel.md.
func TestWireExample(t *testing.T) {
	b, err := Header{Dst: ap("198.19.2.2:8080"), Src: ap("198.19.1.5:40000")}.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	want := []byte{0x4d, 0x4c, 0x54, 0x4e, 0x02, 0x00, 0x00, 0x16, 0x04, 0xc6, 0x13, 0x02, 0x02, 0x1f, 0x90, 0x04, 0xc6, 0x13, 0x01, 0x05, 0x9c, 0x40}
	if !bytes.Equal(b, want) {
		t.Errorf("encoded % x\nwant    % x", b, want)
	}
	if r := reply(StatusRefused); !bytes.Equal(r[:], []byte{0x4d, 0x4c, 2, 3}) {
		t.Errorf("reply % x", r)
	}
}
