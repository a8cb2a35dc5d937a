package plugin

import (
	"errors"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/containernetworking/cni/pkg/types"

	"github.com/meshless/meshless/internal/redirect"
	"github.com/meshless/meshless/internal/wellknown"
)

const prev = `"prevResult": {"cniVersion": "1.0.0",
  "interfaces": [{"name": "cni0"}, {"name": "eth0", "sandbox": "/var/run/netns/p1"}],
  "ips": [{"address": "198.19.1.5/24", "interface": 1}, {"address": "fd00::5/64", "interface": 1}, {"address": "198.19.9.9/24", "interface": 0}]}`

func TestParseConfig(t *testing.T) {
	tests := []struct {
		name   string
		conf   string
		code   uint // expected CNI code on error, 0 for success
		errHas string
		check  func(t *testing.T, c *Config)
	}{
		{
			name: "defaults",
			conf: `{"cniVersion":"1.0.0","name":"n","type":"meshless-cni"}`,
			check: func(t *testing.T, c *Config) {
				if c.DaemonSocket != wellknown.DaemonSocket || c.Redirect != redirect.ModeAuto || c.FailOpen {
					t.Errorf("defaults: %+v", c)
				}
				if !slices.Equal(c.ExcludeNamespaces, []string{"kube-system"}) {
					t.Errorf("excludeNamespaces default = %v", c.ExcludeNamespaces)
				}
				if c.prevResult != nil {
					t.Errorf("prevResult without one in conf")
				}
			},
		},
		{
			name: "explicit empty namespace list meshes kube-system",
			conf: `{"cniVersion":"1.0.0","name":"n","type":"meshless-cni","excludeNamespaces":[]}`,
			check: func(t *testing.T, c *Config) {
				if c.excludedNamespace("kube-system") {
					t.Errorf("kube-system excluded with an empty list")
				}
			},
		},
		{
			name: "all keys",
			conf: `{"cniVersion":"1.1.0","name":"n","type":"meshless-cni","daemonSocket":"/x/s.sock","redirect":"nftables",
				"failOpen":true,"excludeNamespaces":["infra"],"excludeInboundPorts":[22,8081,22],"excludeOutboundPorts":[5432],
				"excludeOutboundCIDRs":["198.18.5.0/24","fd00::1","198.18.6.7/16"],"logFile":"/tmp/x.log",` + prev + `}`,
			check: func(t *testing.T, c *Config) {
				if c.DaemonSocket != "/x/s.sock" || c.Redirect != redirect.ModeNFTables || !c.FailOpen || c.LogFile != "/tmp/x.log" {
					t.Errorf("keys: %+v", c)
				}
				if !c.excludedNamespace("infra") || c.excludedNamespace("kube-system") || c.excludedNamespace("") {
					t.Errorf("namespaces: %v", c.ExcludeNamespaces)
				}
				if !slices.Equal(c.inboundPorts, []uint16{22, 8081}) || !slices.Equal(c.outboundPorts, []uint16{5432}) {
					t.Errorf("ports: %v %v", c.inboundPorts, c.outboundPorts)
				}
				want := []netip.Prefix{netip.MustParsePrefix("198.18.5.0/24"), netip.MustParsePrefix("fd00::1/128"), netip.MustParsePrefix("198.18.0.0/16")}
				if !slices.Equal(c.outboundCIDRs, want) {
					t.Errorf("cidrs: %v", c.outboundCIDRs)
				}
				if c.prevResult == nil || len(c.prevResult.IPs) != 3 {
					t.Fatalf("prevResult: %+v", c.prevResult)
				}
			},
		},
		{name: "not json", conf: `{"cniVersion":`, code: types.ErrDecodingFailure},
		{name: "wrong type names field", conf: `{"cniVersion":"1.0.0","failOpen":"yes"}`, code: types.ErrDecodingFailure, errHas: "failOpen"},
		{name: "bad redirect", conf: `{"cniVersion":"1.0.0","redirect":"ebpf"}`, code: types.ErrInvalidNetworkConfig, errHas: "redirect"},
		{name: "port out of range", conf: `{"cniVersion":"1.0.0","excludeInboundPorts":[80,70000]}`, code: types.ErrInvalidNetworkConfig, errHas: "excludeInboundPorts[1]"},
		{name: "port zero", conf: `{"cniVersion":"1.0.0","excludeOutboundPorts":[0]}`, code: types.ErrInvalidNetworkConfig, errHas: "excludeOutboundPorts[0]"},
		{name: "bad cidr", conf: `{"cniVersion":"1.0.0","excludeOutboundCIDRs":["10.0.0.0/33"]}`, code: types.ErrInvalidNetworkConfig, errHas: "excludeOutboundCIDRs[0]"},
		{name: "bad prevResult", conf: `{"cniVersion":"1.0.0","prevResult":{"ips":[{"address":"nope"}]}}`, code: types.ErrDecodingFailure, errHas: "prevResult"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := parseConfig([]byte(tt.conf))
			if tt.code == 0 {
				if err != nil {
					t.Fatalf("parseConfig: %v", err)
				}
				tt.check(t, c)
				return
			}
			if err == nil {
				t.Fatalf("parseConfig accepted %s", tt.conf)
			}
			var te *types.Error
			if !errors.As(cniError("ADD", err), &te) || te.Code != tt.code {
				t.Fatalf("code = %v, want %d (err %v)", te, tt.code, err)
			}
			if !strings.Contains(te.Msg, tt.errHas) {
				t.Errorf("message %q does not name %q", te.Msg, tt.errHas)
			}
		})
	}
}

func TestPodIPs(t *testing.T) {
	c, err := parseConfig([]byte(`{"cniVersion":"1.0.0",` + prev + `}`))
	if err != nil {
		t.Fatal(err)
	}
	got := podIPs(c.prevResult, "eth0")
	want := []netip.Addr{netip.MustParseAddr("198.19.1.5"), netip.MustParseAddr("fd00::5")}
	if !slices.Equal(got, want) {
		t.Errorf("podIPs = %v, want %v (the bridge's address must not count)", got, want)
	}
	// Without interface indexes every address counts.
	c, _ = parseConfig([]byte(`{"cniVersion":"1.0.0","prevResult":{"cniVersion":"1.0.0","ips":[{"address":"198.19.1.6/24"}]}}`))
	if got := podIPs(c.prevResult, "eth0"); !slices.Equal(got, []netip.Addr{netip.MustParseAddr("198.19.1.6")}) {
		t.Errorf("podIPs without interfaces = %v", got)
	}
}
