package cni

import (
	"strings"
	"testing"
)

func TestNewEntry(t *testing.T) {
	tests := []struct {
		name, snippet, want, err string
	}{
		{name: "defaults", snippet: "",
			want: `{"type":"meshless-cni","capabilities":{"io.kubernetes.cri.pod-annotations":true}}`},
		{name: "keys appended in order", snippet: `{"daemonSocket":"/run/m.sock","failOpen":true,"redirect":"nftables"}`,
			want: `{"type":"meshless-cni","capabilities":{"io.kubernetes.cri.pod-annotations":true},"daemonSocket":"/run/m.sock","failOpen":true,"redirect":"nftables"}`},
		{name: "capabilities merged", snippet: `{"capabilities":{"portMappings":true}}`,
			want: `{"type":"meshless-cni","capabilities":{"io.kubernetes.cri.pod-annotations":true,"portMappings":true}}`},
		{name: "capability switched off", snippet: `{"capabilities":{"io.kubernetes.cri.pod-annotations":false}}`,
			want: `{"type":"meshless-cni","capabilities":{"io.kubernetes.cri.pod-annotations":false}}`},
		{name: "same type accepted", snippet: `{"type":"meshless-cni","logFile":"/var/log/m.log"}`,
			want: `{"type":"meshless-cni","capabilities":{"io.kubernetes.cri.pod-annotations":true},"logFile":"/var/log/m.log"}`},
		{name: "cniVersion ignored", snippet: `{"cniVersion":"9.9.9"}`,
			want: `{"type":"meshless-cni","capabilities":{"io.kubernetes.cri.pod-annotations":true}}`},
		{name: "other type", snippet: `{"type":"bridge"}`, err: `type must be "meshless-cni"`},
		{name: "not an object", snippet: `["x"]`, err: "not a JSON object"},
		{name: "bad json", snippet: `{"daemonSocket":`, err: "invalid JSON"},
		{name: "capabilities not object", snippet: `{"capabilities":true}`, err: "capabilities"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e, err := NewEntry([]byte(tt.snippet))
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("err = %v, want %q", err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := string(e.JSON("")); got != tt.want {
				t.Errorf("entry\n got %s\nwant %s", got, tt.want)
			}
		})
	}
}

func TestEntryEncode(t *testing.T) {
	e, err := NewEntry([]byte(`{"excludeInboundPorts":[22],"capabilities":{"x":{"a":1}}}`))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		version, indent, unit, want string
	}{
		{"", "", "", `{"type":"meshless-cni","capabilities":{"io.kubernetes.cri.pod-annotations":true,"x":{"a":1}},"excludeInboundPorts":[22]}`},
		{"1.0.0", "", "", `{"type":"meshless-cni","cniVersion":"1.0.0","capabilities":{"io.kubernetes.cri.pod-annotations":true,"x":{"a":1}},"excludeInboundPorts":[22]}`},
		{"1.1.0", "\t", "\t", "{\n\t\t\"type\": \"meshless-cni\",\n\t\t\"cniVersion\": \"1.1.0\",\n" +
			"\t\t\"capabilities\": {\n\t\t\t\"io.kubernetes.cri.pod-annotations\": true,\n\t\t\t\"x\": {\n\t\t\t\t\"a\": 1\n\t\t\t}\n\t\t},\n" +
			"\t\t\"excludeInboundPorts\": [\n\t\t\t22\n\t\t]\n\t}"},
	}
	for _, tt := range tests {
		if got := string(e.encode(tt.version, tt.indent, tt.unit)); got != tt.want {
			t.Errorf("encode(%q, %q, %q)\n got %s\nwant %s", tt.version, tt.indent, tt.unit, got, tt.want)
		}
	}
}

func TestMergeNested(t *testing.T) {
	base, _ := parseObject([]byte(`{"a":{"b":{"c":1,"d":2},"e":3},"f":4}`))
	over, _ := parseObject([]byte(`{"a":{"b":{"d":20,"g":5},"e":[1]},"h":6}`))
	got := string(merge(base, over).marshal())
	want := `{"a":{"b":{"c":1,"d":20,"g":5},"e":[1]},"f":4,"h":6}`
	if got != want {
		t.Errorf("merge\n got %s\nwant %s", got, want)
	}
	if got := string(base.marshal()); got != `{"a":{"b":{"c":1,"d":2},"e":3},"f":4}` {
		t.Errorf("merge changed its base: %s", got)
	}
}

func TestUnknownKeys(t *testing.T) {
	e, err := NewEntry([]byte(`{"daemonsocket":"/x","failOpen":true,"logfile":"/y"}`))
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(e.UnknownKeys(), ","); got != "daemonsocket,logfile" {
		t.Errorf("unknown keys = %s", got)
	}
}
