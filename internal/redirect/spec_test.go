package redirect

import (
	"net/netip"
	"reflect"
	"strings"
	"testing"

	"github.com/meshless/meshless/internal/wellknown"
)

func pfx(s ...string) []netip.Prefix {
	var out []netip.Prefix
	for _, x := range s {
		out = append(out, netip.MustParsePrefix(x))
	}
	return out
}

func TestNormalize(t *testing.T) {
	tests := []struct {
		name    string
		in      Spec
		want    Spec
		wantErr string
	}{
		{
			name: "zero values get defaults",
			in:   Spec{IPv4: true},
			want: Spec{OutboundPort: 15001, InboundPort: 15006, Mark: 0x4d4c, MarkMask: 0xffff, TransparentMark: 0x10000, TransparentTable: 0x4d4c, IPv4: true,
				ExcludeInboundPorts: []uint16{}, ExcludeOutboundPorts: []uint16{}, ExcludeOutboundCIDRs: []netip.Prefix{}},
		},
		{
			name: "ports sorted, deduplicated, tunnel and admin dropped",
			in: Spec{IPv4: true, ExcludeInboundPorts: []uint16{9090, 22, 9090, 15008},
				ExcludeOutboundPorts: []uint16{443, 15020, 80, 443}},
			want: Spec{OutboundPort: 15001, InboundPort: 15006, Mark: 0x4d4c, MarkMask: 0xffff, TransparentMark: 0x10000, TransparentTable: 0x4d4c, IPv4: true,
				ExcludeInboundPorts: []uint16{22, 9090}, ExcludeOutboundPorts: []uint16{80, 443}, ExcludeOutboundCIDRs: []netip.Prefix{}},
		},
		{
			name: "cidrs masked, sorted v4 first, deduplicated, mapped v4 unmapped",
			in: Spec{IPv6: true, ExcludeOutboundCIDRs: pfx("fd00::1/8", "10.1.2.3/8", "10.0.0.0/8",
				"::ffff:192.168.0.0/112", "fd00::/8")},
			want: Spec{OutboundPort: 15001, InboundPort: 15006, Mark: 0x4d4c, MarkMask: 0xffff, TransparentMark: 0x10000, TransparentTable: 0x4d4c, IPv6: true,
				ExcludeInboundPorts: []uint16{}, ExcludeOutboundPorts: []uint16{},
				ExcludeOutboundCIDRs: pfx("10.0.0.0/8", "192.168.0.0/16", "fd00::/8")},
		},
		{
			name: "explicit values kept",
			in: Spec{OutboundPort: 1, InboundPort: 2, Mark: 0x10, MarkMask: 0xf0, TransparentMark: 0x1, TransparentTable: 7,
				IPv4: true, IPv6: true},
			want: Spec{OutboundPort: 1, InboundPort: 2, Mark: 0x10, MarkMask: 0xf0, TransparentMark: 0x1, TransparentTable: 7,
				IPv4: true, IPv6: true,
				ExcludeInboundPorts: []uint16{}, ExcludeOutboundPorts: []uint16{}, ExcludeOutboundCIDRs: []netip.Prefix{}},
		},
		{name: "no family", in: Spec{}, wantErr: "no address family"},
		{name: "excluded inbound port 0", in: Spec{IPv4: true, ExcludeInboundPorts: []uint16{0}}, wantErr: "exclude inbound ports: port 0"},
		{name: "excluded outbound port 0", in: Spec{IPv4: true, ExcludeOutboundPorts: []uint16{80, 0}}, wantErr: "exclude outbound ports: port 0"},
		{name: "invalid cidr", in: Spec{IPv4: true, ExcludeOutboundCIDRs: []netip.Prefix{{}}}, wantErr: "invalid prefix"},
		{name: "short mapped cidr", in: Spec{IPv4: true, ExcludeOutboundCIDRs: pfx("::ffff:0:0/90")}, wantErr: "shorter than /96"},
		{name: "same ports", in: Spec{IPv4: true, OutboundPort: 7, InboundPort: 7}, wantErr: "both 7"},
		{name: "reserved port", in: Spec{IPv4: true, OutboundPort: 15008}, wantErr: "reserved"},
		{name: "mark outside mask", in: Spec{IPv4: true, Mark: 0x1ff, MarkMask: 0xff}, wantErr: "outside mask"},
		{name: "zero mask", in: Spec{IPv4: true, Mark: 0x1}, wantErr: "mask is zero"},
		{name: "transparent bit inside mark mask", in: Spec{IPv4: true, TransparentMark: 0x8000}, wantErr: "overlaps mark mask"},
		{name: "full mark mask leaves no transparent bit", in: Spec{IPv4: true, Mark: 0x1, MarkMask: 0xffffffff}, wantErr: "overlaps"},
		{name: "main table", in: Spec{IPv4: true, TransparentTable: 254}, wantErr: "reserved"},
		{name: "local table", in: Spec{IPv4: true, TransparentTable: 255}, wantErr: "reserved"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := tt.in.Normalize()
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("Normalize() error = %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("Normalize(): %v", err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("Normalize() =\n%+v\nwant\n%+v", got, tt.want)
			}
		})
	}
}

// TestDefaultSpecMatchesDaemon: the daemon marks its transparent sockets
// with wellknown.TransparentMark; the rules must skip them (skip mark under the
// mask) and route their replies (the transparent bit, the table).
func TestDefaultSpecMatchesDaemon(t *testing.T) {
	d := DefaultSpec()
	if got := d.Mark | d.TransparentMark; got != wellknown.TransparentMark {
		t.Errorf("Mark|TransparentMark = %#x, want wellknown.TransparentMark %#x", got, wellknown.TransparentMark)
	}
	if wellknown.TransparentMark&d.MarkMask != d.Mark {
		t.Errorf("wellknown.TransparentMark %#x fails the skip match %#x/%#x", wellknown.TransparentMark, d.Mark, d.MarkMask)
	}
	if d.TransparentMark != wellknown.TransparentMarkBit || d.TransparentTable != wellknown.TransparentRouteTable {
		t.Errorf("DefaultSpec transparent bit/table = %#x/%#x, want %#x/%#x", d.TransparentMark, d.TransparentTable,
			wellknown.TransparentMarkBit, wellknown.TransparentRouteTable)
	}
	d.IPv4 = true
	if err := d.Validate(); err != nil {
		t.Errorf("DefaultSpec invalid: %v", err)
	}
}

func TestNormalizeDoesNotMutate(t *testing.T) {
	in := Spec{IPv4: true, ExcludeOutboundPorts: []uint16{443, 80}, ExcludeOutboundCIDRs: pfx("10.1.0.0/8")}
	if _, err := in.Normalize(); err != nil {
		t.Fatal(err)
	}
	if in.ExcludeOutboundPorts[0] != 443 || in.ExcludeOutboundCIDRs[0] != netip.MustParsePrefix("10.1.0.0/8") {
		t.Errorf("Normalize changed the caller's slices: %+v", in)
	}
}

func TestFamilyMismatchedCIDRsIgnored(t *testing.T) {
	spec := Spec{IPv4: true, ExcludeOutboundCIDRs: pfx("10.0.0.0/8", "fd00::/8")}
	for _, mode := range []Mode{ModeIPTables, ModeNFTables} {
		out, err := Render(mode, spec)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(out, "10.0.0.0/8") {
			t.Errorf("%s: v4 cidr missing:\n%s", mode, out)
		}
		if strings.Contains(out, "fd00") || strings.Contains(out, "ip6") {
			t.Errorf("%s: v6 rules in a v4-only spec:\n%s", mode, out)
		}
	}
}
