package plugin

import (
	"encoding/json"
	"os"
	"testing"

	"github.com/containernetworking/cni/libcni"
)

// TestExampleConflist: the conflist in conf/ that the README points to is
// valid for libcni and its meshless-cni entry for parseConfig.
func TestExampleConflist(t *testing.T) {
	b, err := os.ReadFile("../conf/10-bridge-meshless.conflist")
	if err != nil {
		t.Fatal(err)
	}
	list, err := libcni.NetworkConfFromBytes(b)
	if err != nil {
		t.Fatalf("libcni: %v", err)
	}
	last := list.Plugins[len(list.Plugins)-1]
	if last.Network.Type != "meshless-cni" {
		t.Fatalf("last plugin is %q, want meshless-cni", last.Network.Type)
	}
	var entry map[string]any
	if err := json.Unmarshal(last.Bytes, &entry); err != nil {
		t.Fatal(err)
	}
	entry["cniVersion"] = list.CNIVersion
	eb, _ := json.Marshal(entry)
	if _, err := parseConfig(eb); err != nil {
		t.Fatalf("parseConfig(example entry): %v", err)
	}
}
