package meshlet

import (
	"fmt"
	"math"
	"regexp"
	"strings"
	"time"
)

// Limits on list sizes. The CRD's schema has the same maxItems (the
// apiserver needs bounds to cost its CEL rules) and Validate checks them
// too, so the registry file accepts exactly what the apiserver does.
const (
	MaxClients  = 1024
	MaxSelector = 32
	MaxServices = 64
	MaxCanary   = 16
	// MaxIdleTimeoutLen bounds the idleTimeout string.
	MaxIdleTimeoutLen = 32
	// TotalWeight is what canary weights must add up to.
	TotalWeight = 100
)

// DurationPattern is the syntax of idleTimeout: Go's time.ParseDuration
// without a sign ("0", "300ms", "1.5h", "1h30m"). The CRD's schema uses
// the same pattern; Validate also rejects durations too large for Go.
const DurationPattern = `^(0|(([0-9]+(\.[0-9]*)?|\.[0-9]+)(ns|us|µs|μs|ms|s|m|h))+)$`

// Name syntaxes, as Kubernetes defines them.
var (
	durationRE  = regexp.MustCompile(DurationPattern)
	dns1123RE   = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`)
	dns1035RE   = regexp.MustCompile(`^[a-z]([-a-z0-9]*[a-z0-9])?$`)
	subdomainRE = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`)
	labelRE     = regexp.MustCompile(`^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$`)
)

// FieldError is one problem with a Meshlet: the field's path, relative to
// the Meshlet ("name", "spec.server.services[1].maxConn"), and what is
// wrong.
type FieldError struct {
	// Path names the field.
	Path string
	// Msg says what is wrong and, where it helps, what is expected.
	Msg string
}

// Error returns "path: msg".
func (e FieldError) Error() string { return e.Path + ": " + e.Msg }

// Validate returns every problem with m, nil if there is none:
//
//   - namespace: a DNS-1123 label; name: a DNS-1123 subdomain of at most
//     63 characters (it is also the value of the pods' meshless/meshlet
//     label);
//   - client: namespace (optional) a DNS-1123 label, meshlet a Meshlet
//     name, service a DNS-1035 label (a Kubernetes Service name);
//     repeating an entry is harmless and allowed;
//   - server.selector: label keys and values as Kubernetes accepts them;
//   - server.services: name a DNS-1035 label, unique; maxConn 0 (no
//     limit) or more; idleTimeout empty or a Go duration of 0 or more;
//   - server.canary: version a non-empty label value, unique; weight
//     0–100; the weights add up to exactly 100, so "all zero" (no version
//     would get traffic) and shares that do not add up are rejected;
//   - list sizes within MaxClients, MaxSelector, MaxServices, MaxCanary.
func (m *Meshlet) Validate() []FieldError {
	v := &checker{}
	v.dns1123Label("namespace", m.Namespace)
	v.meshletName("name", m.Name)
	v.clients(m.Spec.Client)
	v.selector(m.Spec.Server.Selector)
	v.services(m.Spec.Server.Services)
	v.canary(m.Spec.Server.Canary)
	return v.errs
}

// IdleTimeoutDuration returns s's idle timeout, 0 for none.
func (s *Service) IdleTimeoutDuration() (time.Duration, error) {
	return parseDuration(s.IdleTimeout)
}

func parseDuration(s string) (time.Duration, error) {
	if s == "" {
		return 0, nil
	}
	if len(s) > MaxIdleTimeoutLen || !durationRE.MatchString(s) {
		return 0, fmt.Errorf("invalid duration %q: want a Go duration such as 30s, 5m or 1h30m", s)
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, fmt.Errorf("invalid duration %q: %w", s, err)
	}
	return d, nil
}

type checker struct{ errs []FieldError }

func (v *checker) fail(path, format string, args ...any) {
	v.errs = append(v.errs, FieldError{Path: path, Msg: fmt.Sprintf(format, args...)})
}

func (v *checker) maxItems(path string, n, limit int) {
	if n > limit {
		v.fail(path, "%d entries, at most %d allowed", n, limit)
	}
}

func (v *checker) clients(cs []ClientRef) {
	v.maxItems("spec.client", len(cs), MaxClients)
	for i, c := range cs {
		at := fmt.Sprintf("spec.client[%d]", i)
		if c.Namespace != "" {
			v.dns1123Label(at+".namespace", c.Namespace)
		}
		v.meshletName(at+".meshlet", c.Meshlet)
		v.serviceName(at+".service", c.Service)
	}
}

func (v *checker) selector(sel map[string]string) {
	v.maxItems("spec.server.selector", len(sel), MaxSelector)
	for k, val := range sel {
		at := "spec.server.selector[" + k + "]"
		if msg := labelKeyProblem(k); msg != "" {
			v.fail(at, "invalid label key %q: %s", k, msg)
		}
		if len(val) > 63 || !labelRE.MatchString(val) {
			v.fail(at, "invalid label value %q: at most 63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit", val)
		}
	}
}

func (v *checker) services(ss []Service) {
	v.maxItems("spec.server.services", len(ss), MaxServices)
	seen := map[string]int{}
	for i, s := range ss {
		at := fmt.Sprintf("spec.server.services[%d]", i)
		if v.serviceName(at+".name", s.Name) {
			if j, dup := seen[s.Name]; dup {
				v.fail(at+".name", "duplicate service %q (also spec.server.services[%d])", s.Name, j)
			} else {
				seen[s.Name] = i
			}
		}
		if s.MaxConn < 0 || s.MaxConn > math.MaxInt32 {
			v.fail(at+".maxConn", "must be 0 (no limit) to %d, not %d", math.MaxInt32, s.MaxConn)
		}
		if _, err := parseDuration(s.IdleTimeout); err != nil {
			v.fail(at+".idleTimeout", "%s", err.Error())
		}
	}
}

func (v *checker) canary(cs []Canary) {
	v.maxItems("spec.server.canary", len(cs), MaxCanary)
	seen := map[string]int{}
	sum := 0
	for i, c := range cs {
		at := fmt.Sprintf("spec.server.canary[%d]", i)
		switch {
		case c.Version == "":
			v.fail(at+".version", "required")
		case len(c.Version) > 63 || !labelRE.MatchString(c.Version):
			v.fail(at+".version", "invalid version %q: a label value (at most 63 letters, digits, '-', '_' or '.')", c.Version)
		default:
			if j, dup := seen[c.Version]; dup {
				v.fail(at+".version", "duplicate version %q (also spec.server.canary[%d])", c.Version, j)
			}
			seen[c.Version] = i
		}
		if c.Weight < 0 || c.Weight > TotalWeight {
			v.fail(at+".weight", "must be 0 to %d, not %d", TotalWeight, c.Weight)
		}
		sum += c.Weight
	}
	if len(cs) > 0 && sum != TotalWeight {
		v.fail("spec.server.canary", "weights add up to %d, want %d", sum, TotalWeight)
	}
}

func (v *checker) dns1123Label(path, s string) {
	switch {
	case s == "":
		v.fail(path, "required")
	case len(s) > 63 || !dns1123RE.MatchString(s):
		v.fail(path, "invalid name %q: at most 63 lowercase letters, digits or '-', starting and ending with a letter or digit", s)
	}
}

// meshletName checks a Meshlet's name: an object name (DNS-1123
// subdomain) that is also a label value (at most 63 characters).
func (v *checker) meshletName(path, s string) {
	switch {
	case s == "":
		v.fail(path, "required")
	case len(s) > 63 || !subdomainRE.MatchString(s):
		v.fail(path, "invalid Meshlet name %q: at most 63 lowercase letters, digits, '-' or '.', starting and ending with a letter or digit (it is a label value)", s)
	}
}

// serviceName checks a service's name: a Kubernetes Service name
// (DNS-1035 label), so it never holds '/', '.' or NUL either.
func (v *checker) serviceName(path, s string) bool {
	switch {
	case s == "":
		v.fail(path, "required")
	case len(s) > 63 || !dns1035RE.MatchString(s):
		v.fail(path, "invalid service name %q: at most 63 lowercase letters, digits or '-', starting with a letter and ending with a letter or digit", s)
	default:
		return true
	}
	return false
}

// labelKeyProblem says what is wrong with a label key, "" if nothing:
// an optional DNS subdomain prefix (at most 253) and '/', then a name of
// at most 63 letters, digits, '-', '_' or '.'.
func labelKeyProblem(k string) string {
	prefix, name, hasPrefix := strings.Cut(k, "/")
	if !hasPrefix {
		name, prefix = prefix, ""
	}
	switch {
	case hasPrefix && (prefix == "" || len(prefix) > 253 || !subdomainRE.MatchString(prefix)):
		return "the prefix must be a DNS subdomain of at most 253 characters"
	case name == "" || len(name) > 63 || !labelRE.MatchString(name):
		return "the name must be 1-63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit"
	}
	return ""
}

// Rejected is a Meshlet that Select left out.
type Rejected struct {
	// Index is the Meshlet's position in Select's input.
	Index int
	// Errs say why, with paths relative to the Meshlet.
	Errs []FieldError
}

// Select returns the Meshlets of ms that are valid and do not clash with
// an earlier valid one, in their order, and the others with the reasons.
// Clashes are a namespace/name already taken and a server service name
// already served in the same namespace (both would be the Kubernetes
// Service of that name). Order ms by priority: the registry keeps its
// file's order; Kubernetes discovery puts the Meshlets in use first, then
// the older ones, so that a new Meshlet never pushes out one that works.
func Select(ms []Meshlet) (ok []Meshlet, rejected []Rejected) {
	names := map[nsName]bool{}
	services := map[nsName]string{} // namespace/service -> Meshlet name
	for i := range ms {
		m := &ms[i]
		errs := m.Validate()
		if len(errs) == 0 {
			errs = clashes(m, names, services)
		}
		if len(errs) > 0 {
			rejected = append(rejected, Rejected{Index: i, Errs: errs})
			continue
		}
		names[nsName{m.Namespace, m.Name}] = true
		for _, s := range m.Spec.Server.Services {
			services[nsName{m.Namespace, s.Name}] = m.Name
		}
		ok = append(ok, *m)
	}
	return ok, rejected
}

func clashes(m *Meshlet, names map[nsName]bool, services map[nsName]string) []FieldError {
	v := &checker{}
	if names[nsName{m.Namespace, m.Name}] {
		v.fail("name", "duplicate Meshlet %s", m.Key())
	}
	for j, s := range m.Spec.Server.Services {
		if other, dup := services[nsName{m.Namespace, s.Name}]; dup {
			v.fail(fmt.Sprintf("spec.server.services[%d].name", j),
				"service %q is already served by Meshlet %s/%s (a Service name is served by one Meshlet of its namespace)", s.Name, m.Namespace, other)
		}
	}
	return v.errs
}
