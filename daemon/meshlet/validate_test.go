package meshlet

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"
)

// shop is a valid Meshlet that uses every field.
func shop() Meshlet {
	return Meshlet{
		Namespace: "shop",
		Name:      "web",
		Spec: Spec{
			Client: []ClientRef{
				{Namespace: "data", Meshlet: "db", Service: "pg"},
				{Meshlet: "cart", Service: "api"},
			},
			Server: Server{
				Selector: map[string]string{"role": "server", "example.com/tier": "front"},
				Services: []Service{
					{Name: "web", MaxConn: 100, IdleTimeout: "5m"},
					{Name: "admin", IdleTimeout: "1h30m"},
					{Name: "metrics"},
				},
				Canary: []Canary{{Version: "v1", Weight: 90}, {Version: "v2", Weight: 10}},
			},
		},
	}
}

func TestValidateGood(t *testing.T) {
	for _, tt := range []struct {
		name   string
		mutate func(*Meshlet)
	}{
		{"every field", func(*Meshlet) {}},
		{"client only", func(m *Meshlet) { m.Spec.Server = Server{} }},
		{"empty spec", func(m *Meshlet) { m.Spec = Spec{} }},
		{"all the weight on one version, 0 on another", func(m *Meshlet) {
			m.Spec.Server.Canary = []Canary{{Version: "v1", Weight: 100}, {Version: "v2", Weight: 0}}
		}},
		{"zero durations and maxConn mean none", func(m *Meshlet) {
			m.Spec.Server.Services[0].IdleTimeout = "0"
			m.Spec.Server.Services[1].IdleTimeout = "0s"
			m.Spec.Server.Services[0].MaxConn = 0
		}},
		{"fractional and micro durations", func(m *Meshlet) {
			m.Spec.Server.Services[0].IdleTimeout = "1.5h"
			m.Spec.Server.Services[1].IdleTimeout = "300µs"
		}},
		{"dotted name of 63", func(m *Meshlet) { m.Name = strings.Repeat("a.", 31) + "b" }},
		{"label value with capitals and underscores", func(m *Meshlet) {
			m.Spec.Server.Selector = map[string]string{"app": "My_App.v2", "empty": ""}
			m.Spec.Server.Canary = []Canary{{Version: "V_1.2", Weight: 100}}
		}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			m := shop()
			tt.mutate(&m)
			if errs := m.Validate(); len(errs) != 0 {
				t.Fatalf("rejected: %v", errs)
			}
		})
	}
}

func TestValidateErrors(t *testing.T) {
	tests := []struct {
		name   string
		mutate func(*Meshlet)
		want   []string // "path: message substring", one per expected error
	}{
		{"no name", func(m *Meshlet) { m.Name = "" }, []string{"name: required"}},
		{"no namespace", func(m *Meshlet) { m.Namespace = "" }, []string{"namespace: required"}},
		{"namespace with a dot", func(m *Meshlet) { m.Namespace = "a.b" }, []string{`namespace: invalid name "a.b"`}},
		{"name too long for a label", func(m *Meshlet) { m.Name = strings.Repeat("a", 64) }, []string{"name: invalid Meshlet name"}},
		{"name with capitals", func(m *Meshlet) { m.Name = "Web" }, []string{`name: invalid Meshlet name "Web"`}},
		{"client without meshlet and service", func(m *Meshlet) { m.Spec.Client[1] = ClientRef{} },
			[]string{"spec.client[1].meshlet: required", "spec.client[1].service: required"}},
		{"client bad namespace", func(m *Meshlet) { m.Spec.Client[0].Namespace = "Data" }, []string{`spec.client[0].namespace: invalid name "Data"`}},
		{"client service with a slash", func(m *Meshlet) { m.Spec.Client[0].Service = "../x" }, []string{`spec.client[0].service: invalid service name "../x"`}},
		{"selector bad key", func(m *Meshlet) { m.Spec.Server.Selector = map[string]string{"-x": "a"} }, []string{"spec.server.selector[-x]: invalid label key"}},
		{"selector bad prefix", func(m *Meshlet) { m.Spec.Server.Selector = map[string]string{"Example.com/x": "a"} }, []string{"spec.server.selector[Example.com/x]: invalid label key \"Example.com/x\": the prefix"}},
		{"selector bad value", func(m *Meshlet) { m.Spec.Server.Selector = map[string]string{"app": "a b"} }, []string{`spec.server.selector[app]: invalid label value "a b"`}},
		{"service without name", func(m *Meshlet) { m.Spec.Server.Services[1].Name = "" }, []string{"spec.server.services[1].name: required"}},
		{"service name starting with a digit", func(m *Meshlet) { m.Spec.Server.Services[1].Name = "8080" }, []string{`spec.server.services[1].name: invalid service name "8080"`}},
		{"duplicate service names", func(m *Meshlet) { m.Spec.Server.Services[2].Name = "web" }, []string{`spec.server.services[2].name: duplicate service "web" (also spec.server.services[0])`}},
		{"negative maxConn", func(m *Meshlet) { m.Spec.Server.Services[0].MaxConn = -1 }, []string{"spec.server.services[0].maxConn: must be 0 (no limit) to 2147483647, not -1"}},
		{"maxConn beyond int32", func(m *Meshlet) { m.Spec.Server.Services[0].MaxConn = 1 << 31 }, []string{"spec.server.services[0].maxConn: must be 0"}},
		{"duration with a space", func(m *Meshlet) { m.Spec.Server.Services[0].IdleTimeout = "5 m" }, []string{`spec.server.services[0].idleTimeout: invalid duration "5 m": want a Go duration`}},
		{"duration without unit", func(m *Meshlet) { m.Spec.Server.Services[0].IdleTimeout = "300" }, []string{`spec.server.services[0].idleTimeout: invalid duration "300"`}},
		{"negative duration", func(m *Meshlet) { m.Spec.Server.Services[0].IdleTimeout = "-5s" }, []string{`spec.server.services[0].idleTimeout: invalid duration "-5s"`}},
		{"duration in days", func(m *Meshlet) { m.Spec.Server.Services[0].IdleTimeout = "1d" }, []string{`spec.server.services[0].idleTimeout: invalid duration "1d"`}},
		{"duration too large for Go", func(m *Meshlet) { m.Spec.Server.Services[0].IdleTimeout = "9999999999h" }, []string{`spec.server.services[0].idleTimeout: invalid duration "9999999999h": time: invalid duration`}},
		{"version missing", func(m *Meshlet) { m.Spec.Server.Canary[1].Version = "" }, []string{"spec.server.canary[1].version: required"}},
		{"duplicate versions", func(m *Meshlet) { m.Spec.Server.Canary[1].Version = "v1" }, []string{`spec.server.canary[1].version: duplicate version "v1" (also spec.server.canary[0])`}},
		{"negative weight", func(m *Meshlet) {
			m.Spec.Server.Canary = []Canary{{Version: "v1", Weight: 110}, {Version: "v2", Weight: -10}}
		},
			[]string{"spec.server.canary[0].weight: must be 0 to 100, not 110", "spec.server.canary[1].weight: must be 0 to 100, not -10"}},
		{"weights do not add up", func(m *Meshlet) { m.Spec.Server.Canary[1].Weight = 5 }, []string{"spec.server.canary: weights add up to 95, want 100"}},
		{"weights all zero", func(m *Meshlet) { m.Spec.Server.Canary = []Canary{{Version: "v1"}, {Version: "v2"}} }, []string{"spec.server.canary: weights add up to 0, want 100"}},
		{"too many services", func(m *Meshlet) {
			m.Spec.Server.Services = nil
			for i := range MaxServices + 1 {
				m.Spec.Server.Services = append(m.Spec.Server.Services, Service{Name: fmt.Sprintf("s%d", i)})
			}
		}, []string{"spec.server.services: 65 entries, at most 64 allowed"}},
		{"every problem at once", func(m *Meshlet) {
			m.Name = ""
			m.Spec.Server.Services[0].MaxConn = -1
			m.Spec.Server.Services[1].IdleTimeout = "soon"
			m.Spec.Server.Canary[1].Version = "v1"
		}, []string{"name: required", "services[0].maxConn", "services[1].idleTimeout", "canary[1].version: duplicate"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := shop()
			tt.mutate(&m)
			errs := m.Validate()
			if len(errs) != len(tt.want) {
				t.Fatalf("got %d errors %q, want %d like %q", len(errs), errs, len(tt.want), tt.want)
			}
			for i, w := range tt.want {
				if !strings.Contains(errs[i].Error(), w) {
					t.Errorf("error %d = %q, want it to contain %q", i, errs[i], w)
				}
			}
		})
	}
}

func TestIdleTimeoutDuration(t *testing.T) {
	for in, want := range map[string]time.Duration{"": 0, "0": 0, "1h30m": 90 * time.Minute, ".5s": 500 * time.Millisecond, "5.s": 5 * time.Second} {
		s := Service{IdleTimeout: in}
		if got, err := s.IdleTimeoutDuration(); err != nil || got != want {
			t.Errorf("%q: %v %v, want %v", in, got, err, want)
		}
	}
	if _, err := (&Service{IdleTimeout: "+5s"}).IdleTimeoutDuration(); err == nil {
		t.Error("a signed duration is accepted; the CRD's pattern refuses it")
	}
}

func TestSelect(t *testing.T) {
	a := shop()
	bad := shop()
	bad.Name = "bad"
	bad.Spec.Server.Services = []Service{{Name: "other", MaxConn: -1}}
	clash := shop()
	clash.Name = "clash"
	clash.Spec.Server.Services = []Service{{Name: "fine"}, {Name: "admin"}}
	otherNS := shop()
	otherNS.Namespace = "shop2"
	dup := shop()
	dup.Spec.Server.Services = nil

	ok, rejected := Select([]Meshlet{a, bad, clash, otherNS, dup})
	if len(ok) != 2 || ok[0].Key() != "shop/web" || ok[1].Key() != "shop2/web" {
		t.Fatalf("ok = %v", ok)
	}
	want := map[int]string{
		1: "spec.server.services[0].maxConn: must be 0",
		2: `spec.server.services[1].name: service "admin" is already served by Meshlet shop/web`,
		4: "name: duplicate Meshlet shop/web",
	}
	if len(rejected) != len(want) {
		t.Fatalf("rejected %+v, want %d", rejected, len(want))
	}
	for _, r := range rejected {
		if len(r.Errs) != 1 || !strings.Contains(r.Errs[0].Error(), want[r.Index]) {
			t.Errorf("rejected[%d] = %v, want %q", r.Index, r.Errs, want[r.Index])
		}
	}
}

// The spec reads and writes the field names users write, in JSON (the
// apiserver) and in YAML (the registry file).
func TestSpecEncoding(t *testing.T) {
	const doc = `{"client":[{"namespace":"data","meshlet":"db","service":"pg"}],` +
		`"server":{"selector":{"role":"server"},"services":[{"name":"web","maxConn":100,"idleTimeout":"5m"}],` +
		`"canary":[{"version":"v1","weight":100}]}}`
	var fromJSON, fromYAML Spec
	if err := json.Unmarshal([]byte(doc), &fromJSON); err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal([]byte(doc), &fromYAML); err != nil { // JSON is YAML
		t.Fatal(err)
	}
	for name, s := range map[string]Spec{"json": fromJSON, "yaml": fromYAML} {
		if s.Client[0].Meshlet != "db" || s.Server.Services[0].MaxConn != 100 || s.Server.Services[0].IdleTimeout != "5m" ||
			s.Server.Selector["role"] != "server" || s.Server.Canary[0].Weight != 100 {
			t.Errorf("%s: %+v", name, s)
		}
	}
	out, err := json.Marshal(fromJSON)
	if err != nil || string(out) != doc {
		t.Errorf("round trip:\n got %s %v\nwant %s", out, err, doc)
	}
	if out, _ := json.Marshal(Spec{}); string(out) != "{}" {
		t.Errorf("empty spec = %s, want {}", out)
	}
}
