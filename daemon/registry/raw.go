package registry

import (
	"reflect"
	"slices"
	"strings"

	"gopkg.in/yaml.v3"
)

// The raw file, as YAML gives it. Numbers are ints so that out-of-range
// values are reported as such rather than as YAML type errors. Every entry
// records the line it starts on, for the errors.
type rawFile struct {
	Nodes     []rawNode     `yaml:"nodes"`
	Services  []rawService  `yaml:"services"`
	Meshlets  []rawMeshlet  `yaml:"meshlets"`
	Workloads []rawWorkload `yaml:"workloads"`
}

type rawNode struct {
	line     int
	Name     string   `yaml:"name"`
	Address  string   `yaml:"address"`
	PodCIDRs []string `yaml:"podCIDRs"`
}

type rawService struct {
	line      int
	Namespace string        `yaml:"namespace"`
	Name      string        `yaml:"name"`
	VIPs      []string      `yaml:"vips"`
	Ports     []rawPort     `yaml:"ports"`
	Endpoints []rawEndpoint `yaml:"endpoints"`
}

type rawPort struct {
	line       int
	Name       string `yaml:"name"`
	Port       *int   `yaml:"port"`
	TargetPort *int   `yaml:"targetPort"`
	Protocol   string `yaml:"protocol"`
}

type rawEndpoint struct {
	line   int
	IP     string            `yaml:"ip"`
	Node   string            `yaml:"node"`
	Labels map[string]string `yaml:"labels"`
}

type rawWorkload struct {
	line           int
	Namespace      string            `yaml:"namespace"`
	Name           string            `yaml:"name"`
	IP             string            `yaml:"ip"`
	Node           string            `yaml:"node"`
	ServiceAccount string            `yaml:"serviceAccount"`
	Labels         map[string]string `yaml:"labels"`
}

// A Meshlet is policy: a misspelt field must not pass silently, so unlike
// the rest of the file its entries record their unknown keys (see
// unknownKeys) and the validator reports them.

type rawMeshlet struct {
	line      int
	unknown   []rawKey
	Namespace string   `yaml:"namespace"`
	Name      string   `yaml:"name"`
	Spec      *rawSpec `yaml:"spec"`
}

type rawSpec struct {
	line    int
	unknown []rawKey
	Client  []rawClient `yaml:"client"`
	Server  *rawServer  `yaml:"server"`
}

type rawClient struct {
	line      int
	unknown   []rawKey
	Namespace string `yaml:"namespace"`
	Meshlet   string `yaml:"meshlet"`
	Service   string `yaml:"service"`
}

type rawServer struct {
	line     int
	unknown  []rawKey
	Selector map[string]string  `yaml:"selector"`
	Services []rawServerService `yaml:"services"`
	Canary   []rawCanary        `yaml:"canary"`
}

type rawServerService struct {
	line        int
	unknown     []rawKey
	Name        string `yaml:"name"`
	MaxConn     *int   `yaml:"maxConn"`
	IdleTimeout string `yaml:"idleTimeout"`
}

type rawCanary struct {
	line    int
	unknown []rawKey
	Version string `yaml:"version"`
	Weight  *int   `yaml:"weight"`
}

// rawKey is a mapping key that the entry's type does not know; known
// lists the keys it does.
type rawKey struct {
	name  string
	line  int
	known string
}

// The UnmarshalYAML methods record where each entry starts in the file
// (and, for Meshlets, its unknown keys).

func (r *rawNode) UnmarshalYAML(n *yaml.Node) error {
	type plain rawNode
	r.line = n.Line
	return n.Decode((*plain)(r))
}

func (r *rawService) UnmarshalYAML(n *yaml.Node) error {
	type plain rawService
	r.line = n.Line
	return n.Decode((*plain)(r))
}

func (r *rawPort) UnmarshalYAML(n *yaml.Node) error {
	type plain rawPort
	r.line = n.Line
	return n.Decode((*plain)(r))
}

func (r *rawEndpoint) UnmarshalYAML(n *yaml.Node) error {
	type plain rawEndpoint
	r.line = n.Line
	return n.Decode((*plain)(r))
}

func (r *rawWorkload) UnmarshalYAML(n *yaml.Node) error {
	type plain rawWorkload
	r.line = n.Line
	return n.Decode((*plain)(r))
}

func (r *rawMeshlet) UnmarshalYAML(n *yaml.Node) error {
	type plain rawMeshlet
	r.line, r.unknown = n.Line, unknownKeys(n, (*plain)(r))
	return n.Decode((*plain)(r))
}

func (r *rawSpec) UnmarshalYAML(n *yaml.Node) error {
	type plain rawSpec
	r.line, r.unknown = n.Line, unknownKeys(n, (*plain)(r))
	return n.Decode((*plain)(r))
}

func (r *rawClient) UnmarshalYAML(n *yaml.Node) error {
	type plain rawClient
	r.line, r.unknown = n.Line, unknownKeys(n, (*plain)(r))
	return n.Decode((*plain)(r))
}

func (r *rawServer) UnmarshalYAML(n *yaml.Node) error {
	type plain rawServer
	r.line, r.unknown = n.Line, unknownKeys(n, (*plain)(r))
	return n.Decode((*plain)(r))
}

func (r *rawServerService) UnmarshalYAML(n *yaml.Node) error {
	type plain rawServerService
	r.line, r.unknown = n.Line, unknownKeys(n, (*plain)(r))
	return n.Decode((*plain)(r))
}

func (r *rawCanary) UnmarshalYAML(n *yaml.Node) error {
	type plain rawCanary
	r.line, r.unknown = n.Line, unknownKeys(n, (*plain)(r))
	return n.Decode((*plain)(r))
}

// unknownKeys returns the keys of the mapping n that are not yaml tags of
// the struct v points to (nil when n is not a mapping: Decode reports
// that).
func unknownKeys(n *yaml.Node, v any) []rawKey {
	if n.Kind != yaml.MappingNode {
		return nil
	}
	var known []string
	for f := range reflect.TypeOf(v).Elem().Fields() {
		if name, _, _ := strings.Cut(f.Tag.Get("yaml"), ","); name != "" {
			known = append(known, name)
		}
	}
	var out []rawKey
	for i := 0; i+1 < len(n.Content); i += 2 {
		if k := n.Content[i]; !slices.Contains(known, k.Value) && k.Tag != "!!merge" {
			out = append(out, rawKey{k.Value, k.Line, strings.Join(known, ", ")})
		}
	}
	return out
}
