package identity

import (
	"errors"
	"strings"
	"testing"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

func TestParseTrustDomain(t *testing.T) {
	tests := []struct {
		in string
		ok bool
	}{
		{"cluster.local", true},
		{"a-b_c.d0", true},
		{"0", true},
		{strings.Repeat("a", 255), true},
		{strings.Repeat("a", 256), false},
		{"", false},
		{"Cluster.local", false},
		{"spiffe://cluster.local", false},
		{"cluster.local:8443", false},
		{"a b", false},
		{"a/b", false},
		{"ünicode", false},
		{"a%2eb", false},
	}
	for _, tt := range tests {
		td, err := ParseTrustDomain(tt.in)
		if (err == nil) != tt.ok {
			t.Errorf("ParseTrustDomain(%q) = %v, %v; want ok %v", tt.in, td, err, tt.ok)
		}
		if tt.ok && td.Name() != tt.in {
			t.Errorf("ParseTrustDomain(%q).Name() = %q", tt.in, td.Name())
		}
	}
}

func TestParseID(t *testing.T) {
	tests := []struct {
		in string
		ok bool
	}{
		{"spiffe://cluster.local/meshless/node/n1", true},
		{"spiffe://cluster.local/ns/default/sa/web", true},
		{"spiffe://cluster.local", true},
		{"spiffe://td/A-Z_a.z-0", true},
		{"spiffe://td/" + strings.Repeat("a", 2048-12), true},
		{"spiffe://td/" + strings.Repeat("a", 2048-11), false},
		{"spiffe://" + strings.Repeat("a", 256) + "/x", false},
		{"", false},
		{"cluster.local/ns/a", false},
		{"SPIFFE://cluster.local/x", false},
		{"https://cluster.local/x", false},
		{"spiffe://Cluster.local/x", false},
		{"spiffe:///x", false},
		{"spiffe://td/", false},
		{"spiffe://td//x", false},
		{"spiffe://td/./x", false},
		{"spiffe://td/../x", false},
		{"spiffe://td/x/..", false},
		{"spiffe://td/x?y=1", false},
		{"spiffe://td/x#f", false},
		{"spiffe://td:443/x", false},
		{"spiffe://user@td/x", false},
		{"spiffe://td/a%20b", false},
		{"spiffe://td/a b", false},
	}
	for _, tt := range tests {
		id, err := ParseID(tt.in)
		if (err == nil) != tt.ok {
			t.Errorf("ParseID(%.60q) = %v, %v; want ok %v", tt.in, id, err, tt.ok)
		}
		if tt.ok && id.String() != tt.in {
			t.Errorf("ParseID(%q).String() = %q", tt.in, id.String())
		}
	}
}

func TestNodeAndWorkloadIDs(t *testing.T) {
	tests := []struct {
		name   string
		make   func() (string, error)
		want   string // "" for an error
		isNode string
		isWkld [2]string
	}{
		{name: "node", make: idString(NodeID(tdLocal, "n1")), want: "spiffe://cluster.local/meshless/node/n1", isNode: "n1"},
		{name: "node with dots", make: idString(NodeID(tdLocal, "ip-10-0-0-1.ec2.internal")), want: "spiffe://cluster.local/meshless/node/ip-10-0-0-1.ec2.internal", isNode: "ip-10-0-0-1.ec2.internal"},
		{name: "workload", make: idString(WorkloadID(tdLocal, "default", "web")), want: "spiffe://cluster.local/ns/default/sa/web", isWkld: [2]string{"default", "web"}},
		{name: "node empty", make: idString(NodeID(tdLocal, ""))},
		{name: "node dot", make: idString(NodeID(tdLocal, "."))},
		{name: "node dotdot", make: idString(NodeID(tdLocal, ".."))},
		{name: "node slash", make: idString(NodeID(tdLocal, "a/b"))},
		{name: "node colon", make: idString(NodeID(tdLocal, "a:b"))},
		{name: "workload empty sa", make: idString(WorkloadID(tdLocal, "default", ""))},
		{name: "workload slash ns", make: idString(WorkloadID(tdLocal, "de/fault", "web"))},
		{name: "zero trust domain", make: idString(NodeID(zeroTD, "n1"))},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := tt.make()
			if got != tt.want || (err != nil) != (tt.want == "") {
				t.Fatalf("got %q, %v; want %q", got, err, tt.want)
			}
			if tt.want == "" {
				return
			}
			id, err := ParseID(got)
			if err != nil {
				t.Fatal(err)
			}
			node, err := NodeName(id)
			if node != tt.isNode || (err == nil) != (tt.isNode != "") {
				t.Errorf("NodeName = %q, %v; want %q", node, err, tt.isNode)
			}
			if err != nil && !errors.Is(err, ErrNotNode) {
				t.Errorf("NodeName error %v does not wrap ErrNotNode", err)
			}
			ns, sa, err := Workload(id)
			if [2]string{ns, sa} != tt.isWkld || (err == nil) != (tt.isWkld != [2]string{}) {
				t.Errorf("Workload = %q, %q, %v; want %v", ns, sa, err, tt.isWkld)
			}
		})
	}
}

var (
	tdLocal = spiffeid.RequireTrustDomainFromString(DefaultTrustDomain)
	zeroTD  spiffeid.TrustDomain
)

// idString defers the result of an ID constructor, as a string, to the
// test that checks it.
func idString(id spiffeid.ID, err error) func() (string, error) {
	return func() (string, error) {
		if err != nil {
			return "", err
		}
		return id.String(), nil
	}
}

// TestNotNodeLookalikes: paths near the node prefix are not nodes.
func TestNotNodeLookalikes(t *testing.T) {
	for _, s := range []string{
		"spiffe://cluster.local/meshless/node",
		"spiffe://cluster.local/meshless/node/n1/extra",
		"spiffe://cluster.local/meshless/nodes/n1",
		"spiffe://cluster.local/x/meshless/node/n1",
		"spiffe://cluster.local/ns/meshless/sa/node",
	} {
		id, err := ParseID(s)
		if err != nil {
			t.Fatal(err)
		}
		if node, err := NodeName(id); err == nil {
			t.Errorf("NodeName(%s) = %q, want an error", s, node)
		}
	}
	for _, s := range []string{
		"spiffe://cluster.local/ns/a/sa",
		"spiffe://cluster.local/ns/a/sa/b/c",
		"spiffe://cluster.local/ns/a/xa/b",
		"spiffe://cluster.local/meshless/node/n1",
	} {
		id, _ := ParseID(s)
		if ns, sa, err := Workload(id); err == nil {
			t.Errorf("Workload(%s) = %q, %q; want an error", s, ns, sa)
		}
	}
}
