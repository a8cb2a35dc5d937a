// Package plugin implements meshless-cni, the chained CNI plugin that puts a
// pod into the mesh: on ADD it registers the pod with the node daemon and
// writes the redirection rules into the pod's netns; on DEL it undoes both.
//
// A conflist that chains it after the primary plugin:
//
//	{
//	  "cniVersion": "1.0.0",
//	  "name": "k8s-pod-network",
//	  "plugins": [
//	    {"type": "bridge", "bridge": "cni0", "ipam": {"type": "host-local", ...}},
//	    {"type": "meshless-cni", "capabilities": {"io.kubernetes.cri.pod-annotations": true}}
//	  ]
//	}
//
// Every entry point returns a *types.Error whose code tells the runtime what
// to do; codes are chosen in errors.go only.
package plugin

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"slices"

	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/cni/pkg/version"

	"github.com/meshless/meshless/internal/redirect"
	"github.com/meshless/meshless/internal/wellknown"
)

// AnnotationsKey is the runtimeConfig key under which containerd and CRI-O
// pass the pod's annotations when the plugin declares the capability.
const AnnotationsKey = "io.kubernetes.cri.pod-annotations"

// Config is the plugin's entry in the conflist.
type Config struct {
	types.PluginConf

	// DaemonSocket is the node daemon's unix socket.
	DaemonSocket string `json:"daemonSocket,omitempty"`
	// Redirect selects the rule backend: auto, iptables or nftables.
	Redirect redirect.Mode `json:"redirect,omitempty"`
	// FailOpen lets ADD succeed without the mesh when the daemon is
	// unreachable, instead of failing with code 11 so the runtime retries.
	FailOpen bool `json:"failOpen,omitempty"`
	// ExcludeNamespaces lists Kubernetes namespaces whose pods are not meshed.
	// nil means the default, ["kube-system"]; an empty list meshes all.
	ExcludeNamespaces    []string `json:"excludeNamespaces"`
	ExcludeInboundPorts  []int    `json:"excludeInboundPorts,omitempty"`
	ExcludeOutboundPorts []int    `json:"excludeOutboundPorts,omitempty"`
	ExcludeOutboundCIDRs []string `json:"excludeOutboundCIDRs,omitempty"`
	// LogFile receives the plugin's log; stderr when empty. Never stdout,
	// which belongs to the CNI result.
	LogFile string `json:"logFile,omitempty"`

	RuntimeConfig struct {
		PodAnnotations map[string]string `json:"io.kubernetes.cri.pod-annotations,omitempty"`
	} `json:"runtimeConfig"`

	// Parsed forms, filled by parseConfig.
	inboundPorts  []uint16
	outboundPorts []uint16
	outboundCIDRs []netip.Prefix
	prevResult    *current.Result
}

// configError is a configuration that decoded but is invalid (CNI code 7).
type configError struct{ msg string }

func (e *configError) Error() string { return e.msg }

func invalidf(format string, a ...any) error {
	return &configError{msg: fmt.Sprintf(format, a...)}
}

// decodeError is configuration that is not valid JSON of the right shape
// (CNI code 6).
type decodeError struct{ err error }

func (e *decodeError) Error() string { return e.err.Error() }
func (e *decodeError) Unwrap() error { return e.err }

// parseConfig decodes and validates the plugin's stdin configuration and,
// when present, its prevResult.
func parseConfig(stdin []byte) (*Config, error) {
	// Defaults set before decoding survive only where the key is absent, so
	// "excludeNamespaces": [] really means "mesh every namespace".
	conf := &Config{ExcludeNamespaces: []string{"kube-system"}}
	if err := json.Unmarshal(stdin, conf); err != nil {
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) && te.Field != "" {
			return nil, &decodeError{fmt.Errorf("parse config: field %q: expected %s, got JSON %s", te.Field, te.Type, te.Value)}
		}
		return nil, &decodeError{fmt.Errorf("parse config: %w", err)}
	}
	if conf.DaemonSocket == "" {
		conf.DaemonSocket = wellknown.DaemonSocket
	}
	if conf.Redirect == "" {
		conf.Redirect = redirect.ModeAuto
	}
	switch conf.Redirect {
	case redirect.ModeAuto, redirect.ModeIPTables, redirect.ModeNFTables:
	default:
		return nil, invalidf("redirect: %q is not one of auto, iptables, nftables", conf.Redirect)
	}
	var err error
	if conf.inboundPorts, err = parsePorts("excludeInboundPorts", conf.ExcludeInboundPorts); err != nil {
		return nil, err
	}
	if conf.outboundPorts, err = parsePorts("excludeOutboundPorts", conf.ExcludeOutboundPorts); err != nil {
		return nil, err
	}
	if conf.outboundCIDRs, err = parseCIDRs("excludeOutboundCIDRs", conf.ExcludeOutboundCIDRs); err != nil {
		return nil, err
	}
	if conf.RawPrevResult != nil {
		if err := version.ParsePrevResult(&conf.PluginConf); err != nil {
			return nil, &decodeError{fmt.Errorf("parse prevResult: %w", err)}
		}
		res, err := current.NewResultFromResult(conf.PrevResult)
		if err != nil {
			return nil, &decodeError{fmt.Errorf("convert prevResult: %w", err)}
		}
		conf.prevResult = res
	}
	return conf, nil
}

func parsePorts(field string, in []int) ([]uint16, error) {
	out := make([]uint16, 0, len(in))
	for i, p := range in {
		if p < 1 || p > 65535 {
			return nil, invalidf("%s[%d]: port %d out of range 1-65535", field, i, p)
		}
		out = append(out, uint16(p))
	}
	slices.Sort(out)
	return slices.Compact(out), nil
}

func parseCIDRs(field string, in []string) ([]netip.Prefix, error) {
	out := make([]netip.Prefix, 0, len(in))
	for i, s := range in {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			// A bare address means a single host.
			a, aerr := netip.ParseAddr(s)
			if aerr != nil {
				return nil, invalidf("%s[%d]: %q is not a CIDR or IP address", field, i, s)
			}
			p = netip.PrefixFrom(a, a.BitLen())
		}
		out = append(out, p.Masked())
	}
	return out, nil
}

// excludedNamespace reports whether pods of namespace ns stay out of the mesh.
func (c *Config) excludedNamespace(ns string) bool {
	return ns != "" && slices.Contains(c.ExcludeNamespaces, ns)
}
