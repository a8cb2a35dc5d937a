package plugin

import (
	"net/netip"
	"slices"
	"strings"
	"testing"
)

func TestPodExclusions(t *testing.T) {
	base := `{"cniVersion":"1.0.0","excludeInboundPorts":[22],"excludeOutboundCIDRs":["198.18.9.0/24"]`
	tests := []struct {
		name    string
		ann     string
		optOut  bool
		in, out []uint16
		cidrs   []string
		errHas  string
	}{
		{name: "none", in: []uint16{22}, cidrs: []string{"198.18.9.0/24"}},
		{name: "opt out", ann: `"meshless.io/mesh":"disabled"`, optOut: true},
		{name: "enabled is fine", ann: `"meshless.io/mesh":"enabled"`, in: []uint16{22}, cidrs: []string{"198.18.9.0/24"}},
		{
			name:  "adds to conf",
			ann:   `"meshless.io/exclude-inbound-ports":"9090, 22","meshless.io/exclude-outbound-ports":"5432","meshless.io/exclude-outbound-cidrs":"198.18.7.0/24,fd00::/64"`,
			in:    []uint16{22, 9090},
			out:   []uint16{5432},
			cidrs: []string{"198.18.9.0/24", "198.18.7.0/24", "fd00::/64"},
		},
		{name: "bad mesh value", ann: `"meshless.io/mesh":"off"`, errHas: "meshless.io/mesh"},
		{name: "bad port", ann: `"meshless.io/exclude-outbound-ports":"http"`, errHas: "exclude-outbound-ports"},
		{name: "bad cidr", ann: `"meshless.io/exclude-outbound-cidrs":"x/y"`, errHas: "exclude-outbound-cidrs"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			conf := base
			if tt.ann != "" {
				conf += `,"runtimeConfig":{"io.kubernetes.cri.pod-annotations":{` + tt.ann + `}}`
			}
			c, err := parseConfig([]byte(conf + "}"))
			if err != nil {
				t.Fatal(err)
			}
			ex, optOut, err := c.podExclusions()
			if tt.errHas != "" {
				if err == nil || !strings.Contains(err.Error(), tt.errHas) {
					t.Fatalf("err = %v, want one naming %q", err, tt.errHas)
				}
				return
			}
			if err != nil || optOut != tt.optOut {
				t.Fatalf("optOut=%v err=%v", optOut, err)
			}
			if optOut {
				return
			}
			var cidrs []string
			for _, p := range ex.outboundCIDRs {
				cidrs = append(cidrs, p.String())
			}
			if !slices.Equal(ex.inboundPorts, tt.in) || !slices.Equal(ex.outboundPorts, tt.out) || !slices.Equal(cidrs, tt.cidrs) {
				t.Errorf("got in=%v out=%v cidrs=%v", ex.inboundPorts, ex.outboundPorts, cidrs)
			}
		})
	}
	_ = netip.Prefix{}
}
