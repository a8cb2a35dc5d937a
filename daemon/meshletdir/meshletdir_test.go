package meshletdir

import (
	"errors"
	"testing"
)

func TestLayout(t *testing.T) {
	tests := []struct {
		layout, ns, name, uid, want string
		err                         bool
	}{
		{"", "shop", "web-1", "u1", "/run/meshless/meshlet/shop/web-1", false},
		{"/run/meshless/meshlet", "shop", "web-1", "", "/run/meshless/meshlet/shop/web-1", false},
		{"/var/lib/kubelet/pods/{uid}/volumes/kubernetes.io~empty-dir/meshless-meshlet", "shop", "web-1", "0b1c-2d", "/var/lib/kubelet/pods/0b1c-2d/volumes/kubernetes.io~empty-dir/meshless-meshlet", false},
		{"/k/{uid}", "shop", "web-1", "", "", true},
		{"/k/{namespace}/{name}", "..", "web-1", "", "", true},
		{"/k/{namespace}/{name}", "shop", "a/b", "", "", true},
	}
	for _, tt := range tests {
		l, err := Parse(tt.layout)
		if err != nil {
			t.Fatalf("Parse(%q): %v", tt.layout, err)
		}
		got, err := l.PodDir(tt.ns, tt.name, tt.uid)
		if (err != nil) != tt.err || got != tt.want {
			t.Errorf("%q: PodDir(%q, %q, %q) = %q, %v; want %q, error %v", tt.layout, tt.ns, tt.name, tt.uid, got, err, tt.want, tt.err)
		}
		if err != nil && !errors.Is(err, ErrUnknown) {
			t.Errorf("error %v is not ErrUnknown", err)
		}
	}
	for _, bad := range []string{"relative/{name}", "/k/{pod}", "/k/{name"} {
		if _, err := Parse(bad); err == nil {
			t.Errorf("Parse(%q) accepted", bad)
		}
	}
	l, _ := Parse("")
	if p, err := l.ServerSocket("shop", "web-1", "", "web"); err != nil || p != "/run/meshless/meshlet/shop/web-1/server/web" {
		t.Errorf("ServerSocket = %q, %v", p, err)
	}
	if p, err := l.ClientSocket("shop", "web-1", ""); err != nil || p != "/run/meshless/meshlet/shop/web-1/client/meshless" {
		t.Errorf("ClientSocket = %q, %v", p, err)
	}
	if _, err := l.ServerSocket("shop", "web-1", "", ".."); err == nil {
		t.Error("ServerSocket accepted ..")
	}
}
