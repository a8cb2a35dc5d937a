package meshlet

import (
	"os"
	"reflect"
	"slices"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"
)

// The CRD in install/kubernetes and this package describe one resource:
// the names, the fields, the patterns and the limits must agree, or the
// apiserver would accept what the registry refuses (or the reverse).

const crdPath = "../../install/kubernetes/meshlet-crd.yaml"

type schema struct {
	Type                 string             `yaml:"type"`
	Properties           map[string]*schema `yaml:"properties"`
	Items                *schema            `yaml:"items"`
	AdditionalProperties *schema            `yaml:"additionalProperties"`
	Required             []string           `yaml:"required"`
	Pattern              string             `yaml:"pattern"`
	MaxItems             *int               `yaml:"maxItems"`
	MaxProperties        *int               `yaml:"maxProperties"`
	MaxLength            *int               `yaml:"maxLength"`
	Minimum              *int               `yaml:"minimum"`
	Maximum              *int               `yaml:"maximum"`
	ListType             string             `yaml:"x-kubernetes-list-type"`
	ListMapKeys          []string           `yaml:"x-kubernetes-list-map-keys"`
	Preserve             *bool              `yaml:"x-kubernetes-preserve-unknown-fields"`
}

type crd struct {
	Spec struct {
		Group string `yaml:"group"`
		Scope string `yaml:"scope"`
		Names struct {
			Plural, Singular, Kind string
			ListKind               string `yaml:"listKind"`
		} `yaml:"names"`
		Versions []struct {
			Name    string `yaml:"name"`
			Storage bool   `yaml:"storage"`
			Schema  struct {
				OpenAPIV3Schema *schema `yaml:"openAPIV3Schema"`
			} `yaml:"schema"`
			Subresources map[string]any `yaml:"subresources"`
		} `yaml:"versions"`
	} `yaml:"spec"`
}

func loadCRD(t *testing.T) crd {
	t.Helper()
	b, err := os.ReadFile(crdPath)
	if err != nil {
		t.Fatal(err)
	}
	var c crd
	if err := yaml.Unmarshal(b, &c); err != nil {
		t.Fatal(err)
	}
	return c
}

func TestCRDNames(t *testing.T) {
	c := loadCRD(t)
	n := c.Spec.Names
	if c.Spec.Group != Group || c.Spec.Scope != "Namespaced" || n.Plural != Resource || n.Singular != Singular || n.Kind != Kind || n.ListKind != ListKind {
		t.Errorf("CRD names %+v in group %s scope %s", n, c.Spec.Group, c.Spec.Scope)
	}
	if len(c.Spec.Versions) != 1 || c.Spec.Versions[0].Name != Version || !c.Spec.Versions[0].Storage {
		t.Fatalf("CRD versions %+v, want one: %s", c.Spec.Versions, Version)
	}
	if _, ok := c.Spec.Versions[0].Subresources["status"]; !ok {
		t.Error("no status subresource")
	}
}

// TestCRDFields walks the Go types and the schema together: every JSON
// field is in the schema with a matching type, and nothing else is.
func TestCRDFields(t *testing.T) {
	root := loadCRD(t).Spec.Versions[0].Schema.OpenAPIV3Schema
	var walk func(path string, typ reflect.Type, s *schema)
	walk = func(path string, typ reflect.Type, s *schema) {
		if s == nil {
			t.Errorf("%s: not in the schema", path)
			return
		}
		if s.Preserve != nil && *s.Preserve {
			t.Errorf("%s: preserves unknown fields", path)
		}
		switch typ.Kind() {
		case reflect.Struct:
			if s.Type != "object" {
				t.Errorf("%s: schema type %q, want object", path, s.Type)
			}
			var fields []string
			for f := range typ.Fields() {
				name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
				fields = append(fields, name)
				walk(path+"."+name, f.Type, s.Properties[name])
			}
			for name := range s.Properties {
				if !slices.Contains(fields, name) {
					t.Errorf("%s.%s: in the schema, not in %s", path, name, typ)
				}
			}
		case reflect.Slice:
			if s.Type != "array" || s.MaxItems == nil {
				t.Errorf("%s: schema type %q maxItems %v, want a bounded array", path, s.Type, s.MaxItems)
			}
			walk(path+"[]", typ.Elem(), s.Items)
		case reflect.Map:
			if s.Type != "object" || s.MaxProperties == nil || s.AdditionalProperties == nil {
				t.Errorf("%s: want a bounded object of additionalProperties", path)
				return
			}
			walk(path+"{}", typ.Elem(), s.AdditionalProperties)
		case reflect.String:
			if s.Type != "string" || s.MaxLength == nil {
				t.Errorf("%s: schema type %q maxLength %v, want a bounded string", path, s.Type, s.MaxLength)
			}
		case reflect.Int:
			if s.Type != "integer" || s.Minimum == nil || *s.Minimum != 0 || s.Maximum == nil {
				t.Errorf("%s: want an integer with minimum 0 and a maximum", path)
			}
		default:
			t.Errorf("%s: Go type %s not covered", path, typ)
		}
	}
	walk("spec", reflect.TypeFor[Spec](), root.Properties["spec"])
	if !slices.Contains(root.Required, "spec") {
		t.Error("spec not required")
	}
}

// TestCRDRules compares the patterns and limits with Validate's.
func TestCRDRules(t *testing.T) {
	root := loadCRD(t).Spec.Versions[0].Schema.OpenAPIV3Schema
	spec := root.Properties["spec"]
	server := spec.Properties["server"]
	client := spec.Properties["client"]
	services := server.Properties["services"]
	canary := server.Properties["canary"]
	eq := func(what string, got, want any) {
		t.Helper()
		if !reflect.DeepEqual(got, want) {
			t.Errorf("%s: CRD has %v, Validate %v", what, got, want)
		}
	}
	eq("metadata.name maxLength", *root.Properties["metadata"].Properties["name"].MaxLength, 63)
	eq("client maxItems", *client.MaxItems, MaxClients)
	eq("client[].namespace pattern", client.Items.Properties["namespace"].Pattern, dns1123RE.String())
	eq("client[].meshlet pattern", client.Items.Properties["meshlet"].Pattern, subdomainRE.String())
	eq("client[].service pattern", client.Items.Properties["service"].Pattern, dns1035RE.String())
	eq("client[] required", client.Items.Required, []string{"meshlet", "service"})
	eq("selector maxProperties", *server.Properties["selector"].MaxProperties, MaxSelector)
	eq("selector value pattern", server.Properties["selector"].AdditionalProperties.Pattern, labelRE.String())
	eq("services maxItems", *services.MaxItems, MaxServices)
	eq("services list type", []any{services.ListType, services.ListMapKeys}, []any{"map", []string{"name"}})
	eq("services[].name pattern", services.Items.Properties["name"].Pattern, dns1035RE.String())
	eq("services[].maxConn maximum", *services.Items.Properties["maxConn"].Maximum, 1<<31-1)
	eq("services[].idleTimeout pattern", services.Items.Properties["idleTimeout"].Pattern, DurationPattern)
	eq("services[].idleTimeout maxLength", *services.Items.Properties["idleTimeout"].MaxLength, MaxIdleTimeoutLen)
	eq("canary maxItems", *canary.MaxItems, MaxCanary)
	eq("canary list type", []any{canary.ListType, canary.ListMapKeys}, []any{"map", []string{"version"}})
	eq("canary[].version pattern", canary.Items.Properties["version"].Pattern, labelRE.String())
	eq("canary[].weight maximum", *canary.Items.Properties["weight"].Maximum, TotalWeight)
	eq("canary[] required", canary.Items.Required, []string{"version", "weight"})
}
