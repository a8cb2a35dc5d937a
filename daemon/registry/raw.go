package registry

import "gopkg.in/yaml.v3"

// The raw file, as YAML gives it. Numbers are ints so that out-of-range
// values are reported as such rather than as YAML type errors. Every entry
// records the line it starts on, for the errors.
type rawFile struct {
	Nodes    []rawNode    `yaml:"nodes"`
	Services []rawService `yaml:"services"`
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

// The UnmarshalYAML methods record where each entry starts in the file.

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
