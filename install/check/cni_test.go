package check

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestChainCases reads conf dirs laid out as operators get them wrong and
// checks that the chain line names the problem and the fix.
func TestChainCases(t *testing.T) {
	const bridge = `{"type":"bridge","bridge":"cni0","ipam":{"type":"host-local","subnet":"198.19.9.0/24"}}`
	const mesh = `{"type":"meshless-cni","daemonSocket":"/run/x.sock","redirect":"iptables"}`
	list := func(plugins ...string) string {
		return `{"cniVersion":"1.0.0","name":"net","plugins":[` + strings.Join(plugins, ",") + `]}`
	}
	cases := []struct {
		name   string
		files  map[string]string
		status Status
		text   string
	}{
		{"chained", map[string]string{"10-net.conflist": list(bridge, mesh)}, StatusOK, "bridge -> meshless-cni"},
		{"empty dir", nil, StatusFail, "no network config in"},
		{"single conf", map[string]string{"10-net.conf": `{"cniVersion":"1.0.0","name":"net","type":"bridge"}`}, StatusFail, "(bridge) does not chain meshless-cni; fix: run `meshlessctl install-cni`"},
		{"meshless first", map[string]string{"10-net.conflist": list(mesh, bridge)}, StatusFail, "runs meshless-cni first"},
		{"in a later file", map[string]string{"05-a.conflist": list(bridge), "10-b.conflist": list(bridge, mesh)}, StatusFail, "meshless-cni is in 10-b.conflist, but the runtime uses 05-a.conflist"},
		{"broken first file skipped", map[string]string{"05-a.conflist": "{", "10-b.conflist": list(bridge, mesh)}, StatusOK, "10-b.conflist"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			for name, data := range c.files {
				if err := os.WriteFile(filepath.Join(dir, name), []byte(data), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			ch := loadChain(dir)
			r := checkChain(ch, dir)
			if r.Status != c.status || !strings.Contains(r.String(), c.text) {
				t.Fatalf("got %q, want %s with %q", r.String(), c.status, c.text)
			}
			if c.name == "chained" {
				if s, from := socketOrigin("", ch); s != "/run/x.sock" || !strings.Contains(from, "10-net.conflist") {
					t.Errorf("socket %q from %q, want the conflist's", s, from)
				}
				if m := ch.str("redirect", "auto"); m != "iptables" {
					t.Errorf("redirect %q, want the conflist's iptables", m)
				}
			}
		})
	}
}

// TestMainWithoutCluster checks that with no cluster configured the report
// says so in one SKIP line and does not fail.
func TestMainWithoutCluster(t *testing.T) {
	t.Setenv("KUBECONFIG", "")
	t.Setenv("HOME", t.TempDir())
	t.Setenv("KUBERNETES_SERVICE_HOST", "")
	var out, errb strings.Builder
	if err := Main(t.Context(), []string{"--node=false"}, &out, &errb); err != nil {
		t.Fatalf("Main: %v (%s)", err, errb.String())
	}
	if !strings.HasPrefix(out.String(), "SKIP  cluster ") || !strings.Contains(out.String(), "no check failed") {
		t.Fatalf("report:\n%s", out.String())
	}
}
