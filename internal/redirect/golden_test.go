package redirect

import (
	"flag"
	"os"
	"path/filepath"
	"testing"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden from the current output")

// goldenSpecs are the specs whose rules are pinned in testdata, shared by
// the unit tests (rendering) and the root tests (what the kernel lists).
var goldenSpecs = []struct {
	name string
	spec Spec
}{
	{"default", Spec{IPv4: true}},
	{"exclusions", Spec{IPv4: true, IPv6: true,
		ExcludeInboundPorts:  []uint16{9090, 22, 22},
		ExcludeOutboundPorts: []uint16{443, 15020, 81},
		ExcludeOutboundCIDRs: pfx("10.96.0.0/12", "169.254.169.254/32", "fd00:10:96::/112", "2001:db8::1/128")}},
	{"v4-only", Spec{IPv4: true, ExcludeOutboundPorts: []uint16{53},
		ExcludeOutboundCIDRs: pfx("192.168.0.0/16", "fd00::/8")}},
	{"v6-only", Spec{IPv6: true, ExcludeInboundPorts: []uint16{8443},
		ExcludeOutboundCIDRs: pfx("192.168.0.0/16", "fd00::/8")}},
	{"dual-stack", Spec{IPv4: true, IPv6: true, OutboundPort: 16001, InboundPort: 16006,
		Mark: 0x100, MarkMask: 0xff00, TransparentMark: 0x200000, TransparentTable: 100}},
}

// goldenPath names the golden file of a backend's rules, or with mode
// "routes" of the ip rules and routes (RenderRoutes).
func goldenPath(mode Mode, name string) string {
	return filepath.Join("testdata", string(mode)+"-"+name+".golden")
}

const routesGolden Mode = "routes"

// compareGolden compares got with a golden file, or rewrites it with -update.
func compareGolden(t *testing.T, path, got string) {
	t.Helper()
	if *update {
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -update to create)", err)
	}
	if got != string(want) {
		t.Errorf("%s differs (go test -update rewrites it):\n--- got\n%s--- want\n%s", path, got, want)
	}
}

func TestRenderGolden(t *testing.T) {
	for _, mode := range []Mode{ModeIPTables, ModeNFTables} {
		for _, g := range goldenSpecs {
			t.Run(string(mode)+"/"+g.name, func(t *testing.T) {
				got, err := Render(mode, g.spec)
				if err != nil {
					t.Fatal(err)
				}
				compareGolden(t, goldenPath(mode, g.name), got)
			})
		}
	}
	for _, g := range goldenSpecs {
		t.Run("routes/"+g.name, func(t *testing.T) {
			got, err := RenderRoutes(g.spec)
			if err != nil {
				t.Fatal(err)
			}
			compareGolden(t, goldenPath(routesGolden, g.name), got)
		})
	}
}
