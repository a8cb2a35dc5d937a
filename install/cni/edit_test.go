package cni

import (
	"bytes"
	"slices"
	"strings"
	"testing"
)

func testEntry(t *testing.T) *Entry {
	t.Helper()
	e, err := NewEntry([]byte(`{"daemonSocket":"/run/meshless/cni.sock","excludeNamespaces":["kube-system"]}`))
	if err != nil {
		t.Fatal(err)
	}
	return e
}

func TestInsertGolden(t *testing.T) {
	e := testEntry(t)
	tests := []struct {
		fixture string
		// original is the fixture without any meshless entry, which
		// uninstall must give back ("" when it is the fixture itself).
		original string
		types    []string
	}{
		{fixture: "10-flannel.conflist", types: []string{"flannel", "portmap", PluginType}},
		{fixture: "10-calico.conflist", types: []string{"calico", "bandwidth", "portmap", PluginType}},
		{fixture: "05-cilium.conflist", types: []string{"cilium-cni", PluginType}},
		{fixture: "10-kindnet.conflist", types: []string{"ptp", "portmap", PluginType}},
		{fixture: "10-flannel-old-meshless.conflist", original: "10-flannel.conflist",
			types: []string{"flannel", "portmap", PluginType}},
		{fixture: "20-compact-old-meshless.conflist", types: []string{"bridge", "portmap", PluginType}},
	}
	for _, tt := range tests {
		t.Run(tt.fixture, func(t *testing.T) {
			in := fixture(t, tt.fixture)
			out, err := insertEntry(in, e)
			if err != nil {
				t.Fatal(err)
			}
			golden(t, tt.fixture, out)
			if got := pluginTypes(t, out); !slices.Equal(got, tt.types) {
				t.Errorf("plugin types = %v, want %v", got, tt.types)
			}

			again, err := insertEntry(out, e)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(again, out) {
				t.Errorf("second insert changed the file:\n%s", again)
			}

			removed, found, err := removeEntry(out)
			if err != nil || !found {
				t.Fatalf("remove: found=%v err=%v", found, err)
			}
			if tt.original != "" {
				orig := fixture(t, tt.original)
				if !bytes.Equal(removed, orig) {
					t.Errorf("uninstall did not restore %s:\n%s", tt.original, removed)
				}
			} else if !strings.Contains(tt.fixture, "meshless") && !bytes.Equal(removed, in) {
				t.Errorf("uninstall did not restore the original bytes:\n%s", removed)
			}
			want := slices.DeleteFunc(plugins(t, in), func(p string) bool { return strings.Contains(p, `"type":"meshless-cni"`) })
			if got := plugins(t, removed); !slices.Equal(got, want) {
				t.Errorf("plugins after uninstall = %v, want %v", got, want)
			}
			if _, found, _ := removeEntry(removed); found {
				t.Error("second uninstall found an entry")
			}
		})
	}
}

func TestConvertGolden(t *testing.T) {
	e := testEntry(t)
	in := fixture(t, "05-cilium.conf")
	out, err := convertConf(in, e)
	if err != nil {
		t.Fatal(err)
	}
	golden(t, "05-cilium.conf.conflist", out)
	if got := pluginTypes(t, out); !slices.Equal(got, []string{"cilium-cni", PluginType}) {
		t.Errorf("plugin types = %v", got)
	}
	again, err := insertEntry(out, e)
	if err != nil || !bytes.Equal(again, out) {
		t.Errorf("insert into the converted list changed it (err %v):\n%s", err, again)
	}
	removed, _, err := removeEntry(out)
	if err != nil {
		t.Fatal(err)
	}
	if got := plugins(t, removed); len(got) != 1 || !sameJSON([]byte(got[0]), in) {
		t.Errorf("plugins after uninstall = %v, want the conf itself", got)
	}
}

func TestEntryVersionFollowsList(t *testing.T) {
	e := testEntry(t)
	for _, v := range []string{"0.4.0", "1.0.0", "1.1.0"} {
		in := []byte(`{"cniVersion":"` + v + `","name":"n","plugins":[{"type":"bridge"}]}`)
		out, err := insertEntry(in, e)
		if err != nil {
			t.Fatal(err)
		}
		want := `{"type":"meshless-cni","cniVersion":"` + v + `",`
		if !bytes.Contains(out, []byte(want)) {
			t.Errorf("%s: entry lacks %s:\n%s", v, want, out)
		}
	}
	out, err := insertEntry([]byte(`{"name":"n","plugins":[{"type":"bridge"}]}`), e)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Count(out, []byte("cniVersion")) != 0 {
		t.Errorf("entry got a cniVersion the list lacks:\n%s", out)
	}
}

func TestInsertErrors(t *testing.T) {
	e := testEntry(t)
	tests := []struct {
		name, data, want string
	}{
		{"not json", `{"name":`, "invalid JSON"},
		{"array", `[1]`, "not a JSON object"},
		{"plugins string", `{"name":"n","plugins":"bridge"}`, "plugins is not a list"},
		{"plugins object", `{"name":"n","plugins":{"type":"bridge"}}`, "plugins is not a list"},
		{"plugins empty", `{"name":"n","plugins":[]}`, "plugins is empty"},
		{"no plugins", `{"name":"n","cniVersion":"1.0.0"}`, "no inline plugins list"},
		{"no name", `{"plugins":[{"type":"bridge"}]}`, "no name"},
		{"plugin not object", `{"name":"n","plugins":[1]}`, "plugin 0 is not an object"},
		{"plugin no type", `{"name":"n","plugins":[{"type":"bridge"},{"x":1}]}`, "plugin 1 has no type"},
		{"trailing data", `{"name":"n","plugins":[{"type":"bridge"}]} {}`, "data after"},
		{"only meshless", `{"name":"n","plugins":[{"type":"meshless-cni"}]}`, "no plugin besides"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := insertEntry([]byte(tt.data), e)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want it to contain %q", err, tt.want)
			}
		})
	}
}

func TestConvertErrors(t *testing.T) {
	e := testEntry(t)
	tests := []struct {
		name, data, want string
	}{
		{"no type", `{"name":"n","cniVersion":"0.3.1"}`, "missing 'type'"},
		{"list in conf", `{"name":"n","plugins":[{"type":"bridge"}]}`, "needs the .conflist extension"},
		{"no name", `{"type":"bridge"}`, "no name"},
		{"meshless", `{"name":"n","type":"meshless-cni"}`, "no plugin besides"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := convertConf([]byte(tt.data), e)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want it to contain %q", err, tt.want)
			}
		})
	}
}

func TestRemoveEntryPositions(t *testing.T) {
	tests := []struct{ in, want string }{
		{`{"name":"n","plugins":[{"type":"meshless-cni"},{"type":"a"},{"type":"b"}]}`,
			`{"name":"n","plugins":[{"type":"a"},{"type":"b"}]}`},
		{`{"name":"n","plugins":[ {"type":"a"} , {"type":"meshless-cni"} , {"type":"b"} ]}`,
			`{"name":"n","plugins":[ {"type":"a"} , {"type":"b"} ]}`},
		{`{"name":"n","plugins":[{"type":"meshless-cni"},{"type":"meshless-cni"},{"type":"a"}]}`,
			`{"name":"n","plugins":[{"type":"a"}]}`},
		{"{\"name\":\"n\",\"plugins\":[\n  {\"type\":\"a\"},\n  {\"type\":\"meshless-cni\"}\n]}\n",
			"{\"name\":\"n\",\"plugins\":[\n  {\"type\":\"a\"}\n]}\n"},
	}
	for _, tt := range tests {
		got, found, err := removeEntry([]byte(tt.in))
		if err != nil || !found {
			t.Fatalf("%s: found=%v err=%v", tt.in, found, err)
		}
		if string(got) != tt.want {
			t.Errorf("remove(%s)\n got %s\nwant %s", tt.in, got, tt.want)
		}
	}
}
