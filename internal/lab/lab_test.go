package lab

import (
	"bytes"
	"context"
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/meshless/meshless/daemon/registry"
)

func TestValidName(t *testing.T) {
	for _, ok := range []string{"ml", "lab2", "a", "abcdefghijkl"} {
		if err := ValidName(ok); err != nil {
			t.Errorf("ValidName(%q) = %v, want nil", ok, err)
		}
	}
	for _, bad := range []string{"", "ML", "2lab", "ml-n1", "a/b", "abcdefghijklm", "ml underlay"} {
		if err := ValidName(bad); err == nil {
			t.Errorf("ValidName(%q) = nil, want an error", bad)
		}
	}
}

func TestFilterLabNetns(t *testing.T) {
	names := []string{"ml-underlay", "ml-n1", "ml-n1-p1", "ml-n10-p2", "ml2-n1", "ml-n1-x",
		"cni-1234", "ml-n2", "ml-n2-p1", "xml-n1", "ml-underlay2"}
	got := filterLabNetns("ml", names)
	want := []string{"ml-n1-p1", "ml-n10-p2", "ml-n2-p1", "ml-n1", "ml-n2", "ml-underlay"}
	if !slices.Equal(got, want) {
		t.Fatalf("filterLabNetns = %v, want %v", got, want)
	}
	if got := filterLabNetns("ml2", names); !slices.Equal(got, []string{"ml2-n1"}) {
		t.Fatalf("filterLabNetns(ml2) = %v", got)
	}
}

// The generated registry must be what meshlessd accepts, with the pods'
// real IPs when known and host-local's predicted ones before.
func TestRegistryYAML(t *testing.T) {
	s := &State{Name: "ml"}
	for i := 1; i <= 3; i++ {
		s.Nodes = append(s.Nodes, &NodeState{Name: "n" + string(rune('0'+i)), Address: nodeAddr(i), PodCIDR: nodePodCIDR(i)})
	}
	s.Nodes[1].Pods = []*PodState{{Name: "p1", Node: "n2", IP: "198.19.2.7"}}
	s.Service = &ServiceState{Namespace: "default", Name: "web", VIP: ServiceVIP, Port: 80, TargetPort: 8080,
		Endpoints: []string{"n1/p1", "n2/p1", "n3/p2"}}
	b, err := s.registryYAML()
	if err != nil {
		t.Fatal(err)
	}
	reg, err := registry.Parse(b)
	if err != nil {
		t.Fatalf("registry.Parse: %v\n%s", err, b)
	}
	if len(reg.Nodes) != 3 || reg.Nodes[2].Address.String() != "198.18.0.3:15008" || reg.Nodes[2].PodCIDRs[0].String() != "198.19.3.0/24" {
		t.Errorf("nodes = %+v", reg.Nodes)
	}
	if len(reg.Services) != 1 {
		t.Fatalf("services = %+v", reg.Services)
	}
	svc := reg.Services[0]
	if svc.Namespace != "default" || svc.Name != "web" || svc.VIPs[0].String() != ServiceVIP ||
		svc.Ports[0].Port != 80 || svc.Ports[0].TargetPort != 8080 {
		t.Errorf("service = %+v", svc)
	}
	var eps []string
	for _, e := range svc.Endpoints {
		eps = append(eps, e.Node+"="+e.IP.String())
	}
	want := []string{"n1=198.19.1.2", "n2=198.19.2.7", "n3=198.19.3.3"}
	if !slices.Equal(eps, want) {
		t.Errorf("endpoints = %v, want %v", eps, want)
	}
}

func TestMainUsage(t *testing.T) {
	ctx := context.Background()
	var out, errOut bytes.Buffer
	if err := Main(ctx, nil, &out, &errOut); err == nil || !strings.Contains(errOut.String(), "meshlessctl lab") {
		t.Errorf("no args: err %v, stderr %q", err, errOut.String())
	}
	if err := Main(ctx, []string{"frobnicate"}, &out, &errOut); err == nil {
		t.Error("unknown command: want an error")
	}
	if err := Main(ctx, []string{"exec", "n1/p1"}, &out, &errOut); err == nil || !strings.Contains(err.Error(), "usage") {
		t.Errorf("exec without command: %v", err)
	}
	if err := Main(ctx, []string{"down", "--name", "Bad-Name"}, &out, &errOut); err == nil {
		t.Error("down with an invalid name: want an error")
	}
	if err := Main(ctx, []string{"status", "--name", "nosuchlab", "--root", t.TempDir()}, &out, &errOut); err == nil {
		t.Error("status of a missing lab: want an error")
	}
	var ee *ExitError
	if errors.As(Main(ctx, []string{"up", "extra"}, &out, &errOut), &ee) {
		t.Error("up with extra arguments: want a usage error, not an exit status")
	}
}
