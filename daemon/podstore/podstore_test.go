package podstore

import (
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/meshless/meshless/daemon/cniapi"
)

func pod(id string) *cniapi.Pod {
	return &cniapi.Pod{
		Attachment: cniapi.Attachment{ContainerID: id, IfName: "eth0"},
		Netns:      "/var/run/netns/" + id,
		IPs:        []netip.Addr{netip.MustParseAddr("198.19.1.2"), netip.MustParseAddr("fd00::2")},
		Namespace:  "default",
		Name:       "web-" + id,
		Exclusions: cniapi.Exclusions{InboundPorts: []uint16{22}},
	}
}

func TestRoundTrip(t *testing.T) {
	tests := []struct {
		name   string
		save   []*cniapi.Pod
		delete []cniapi.Attachment
		want   []string
	}{
		{"empty", nil, nil, nil},
		{"two", []*cniapi.Pod{pod("b"), pod("a")}, nil, []string{"a.eth0", "b.eth0"}},
		{"overwrite", []*cniapi.Pod{pod("a"), pod("a")}, nil, []string{"a.eth0"}},
		{"delete", []*cniapi.Pod{pod("a"), pod("b")}, []cniapi.Attachment{{ContainerID: "a", IfName: "eth0"}}, []string{"b.eth0"}},
		{"delete twice and absent", []*cniapi.Pod{pod("a")}, []cniapi.Attachment{
			{ContainerID: "a", IfName: "eth0"}, {ContainerID: "a", IfName: "eth0"}, {ContainerID: "zz", IfName: "eth1"},
		}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "state")
			s, err := Open(dir)
			if err != nil {
				t.Fatal(err)
			}
			for _, p := range tt.save {
				if err := s.Save(p); err != nil {
					t.Fatalf("save: %v", err)
				}
			}
			for _, a := range tt.delete {
				if err := s.Delete(a); err != nil {
					t.Fatalf("delete %v: %v", a, err)
				}
			}
			// A second store over the same folder sees the same state.
			s2, err := Open(dir)
			if err != nil {
				t.Fatal(err)
			}
			got, err := s2.Load()
			if err != nil {
				t.Fatalf("load: %v", err)
			}
			var keys []string
			for _, p := range got {
				keys = append(keys, p.Key())
				if want := pod(p.ContainerID); !reflect.DeepEqual(&p, want) {
					t.Errorf("loaded %+v, want %+v", p, want)
				}
			}
			if !reflect.DeepEqual(keys, tt.want) {
				t.Errorf("keys = %v, want %v", keys, tt.want)
			}
		})
	}
}

func TestAtomicNoLeftovers(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "state")
	s, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	// A temp file left by a crash mid-write.
	if err := os.WriteFile(filepath.Join(dir, tmpPrefix+"crash"), []byte("{"), 0o600); err != nil {
		t.Fatal(err)
	}
	for range 20 {
		if err := s.Save(pod("a")); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.Load(); err != nil {
		t.Fatal(err)
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	if !reflect.DeepEqual(names, []string{"a.eth0.json"}) {
		t.Errorf("state dir holds %v, want only a.eth0.json", names)
	}
	fi, err := os.Stat(dir)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o700 {
		t.Errorf("state dir mode %v, want 0700", fi.Mode().Perm())
	}
	fi, err = os.Stat(filepath.Join(dir, "a.eth0.json"))
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm()&0o077 != 0 {
		t.Errorf("state file mode %v is readable by others", fi.Mode().Perm())
	}
}

func TestLoadSkipsBadFiles(t *testing.T) {
	tests := []struct {
		name, file, content, wantErr string
	}{
		{"garbage", "x.eth0.json", "not json", "parse state file"},
		{"wrong name", "y.eth0.json", `{"containerID":"z","ifName":"eth0","netns":"/n","ips":["198.19.1.2"]}`, "holds attachment"},
		{"invalid pod", "w.eth0.json", `{"containerID":"w","ifName":"eth0","ips":["198.19.1.2"]}`, "netns is required"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := Open(t.TempDir())
			if err != nil {
				t.Fatal(err)
			}
			if err := s.Save(pod("good")); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(s.Dir(), tt.file), []byte(tt.content), 0o600); err != nil {
				t.Fatal(err)
			}
			pods, err := s.Load()
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("Load error = %v, want it to mention %q", err, tt.wantErr)
			}
			if len(pods) != 1 || pods[0].ContainerID != "good" {
				t.Errorf("Load pods = %+v, want only the good one", pods)
			}
		})
	}
}

func TestRejectsInvalidAttachment(t *testing.T) {
	s, err := Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	bad := pod("a")
	bad.ContainerID = "../escape"
	if err := s.Save(bad); err == nil {
		t.Error("Save accepted a container ID with a path separator")
	}
	if err := s.Delete(bad.Attachment); err == nil {
		t.Error("Delete accepted a container ID with a path separator")
	}
}
