package localapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"

	"github.com/meshless/meshless/daemon/cniapi"
	"github.com/meshless/meshless/daemon/inpod"
)

// fakeBackend records calls and answers with canned errors.
type fakeBackend struct {
	pods     map[string]cniapi.PodStatus
	notReady bool
	failWith error
	gcValid  []cniapi.Attachment
}

func (f *fakeBackend) Register(_ context.Context, p *cniapi.Pod) (*cniapi.PodStatus, error) {
	if f.notReady {
		return nil, inpod.ErrNotReady
	}
	if err := p.Validate(); err != nil {
		return nil, fmt.Errorf("%w: %w", inpod.ErrInvalid, err)
	}
	if f.failWith != nil {
		return nil, f.failWith
	}
	st := cniapi.PodStatus{Pod: *p, Listeners: []string{"127.0.0.1:15001"}}
	f.pods[p.Key()] = st
	return &st, nil
}

func (f *fakeBackend) Deregister(_ context.Context, a cniapi.Attachment) error {
	if f.notReady {
		return inpod.ErrNotReady
	}
	delete(f.pods, a.Key())
	return f.failWith
}

func (f *fakeBackend) Get(a cniapi.Attachment) (*cniapi.PodStatus, bool) {
	st, ok := f.pods[a.Key()]
	return &st, ok
}

func (f *fakeBackend) List() []cniapi.PodStatus {
	var l []cniapi.PodStatus
	for _, p := range f.pods {
		l = append(l, p)
	}
	return l
}

func (f *fakeBackend) GC(_ context.Context, valid []cniapi.Attachment) ([]cniapi.Attachment, error) {
	f.gcValid = valid
	return nil, f.failWith
}

func (f *fakeBackend) Ready() error {
	if f.notReady {
		return fmt.Errorf("%w: restoring state", inpod.ErrNotReady)
	}
	return nil
}

const goodPod = `{"containerID":"c1","ifName":"eth0","netns":"/run/netns/x","ips":["198.19.1.2"]}`

func TestRoutes(t *testing.T) {
	registered := cniapi.PodStatus{Pod: cniapi.Pod{
		Attachment: cniapi.Attachment{ContainerID: "old", IfName: "eth0"},
		Netns:      "/run/netns/old", IPs: []netip.Addr{netip.MustParseAddr("198.19.1.9")},
	}}
	tests := []struct {
		name       string
		method     string
		path       string
		body       string
		notReady   bool
		failWith   error
		wantCode   int
		wantInBody string
	}{
		{"register", "POST", "/v1/pods", goodPod, false, nil, 200, `"listeners":["127.0.0.1:15001"]`},
		{"register not ready", "POST", "/v1/pods", goodPod, true, nil, 503, "not ready"},
		{"register empty body", "POST", "/v1/pods", "", false, nil, 400, "body"},
		{"register bad json", "POST", "/v1/pods", "{", false, nil, 400, "body"},
		{"register trailing", "POST", "/v1/pods", goodPod + "{}", false, nil, 400, "trailing"},
		{"register bad ip", "POST", "/v1/pods", `{"containerID":"c","ifName":"eth0","netns":"/n","ips":["nope"]}`, false, nil, 400, "body"},
		{"register wrong type", "POST", "/v1/pods", `{"containerID":7}`, false, nil, 400, "containerID"},
		{"register no netns", "POST", "/v1/pods", `{"containerID":"c","ifName":"eth0","ips":["198.19.1.2"]}`, false, nil, 400, "netns"},
		{"register no ips", "POST", "/v1/pods", `{"containerID":"c","ifName":"eth0","netns":"/n"}`, false, nil, 400, "IP"},
		{"register huge", "POST", "/v1/pods", `{"name":"` + strings.Repeat("x", maxBody) + `"}`, false, nil, 413, "larger"},
		{"register internal", "POST", "/v1/pods", goodPod, false, errors.New("disk full"), 500, "disk full"},
		{"get", "GET", "/v1/pods/old.eth0", "", false, nil, 200, `"containerID":"old"`},
		{"get absent", "GET", "/v1/pods/nope.eth0", "", false, nil, 404, "not registered"},
		{"get bad key", "GET", "/v1/pods/nodot", "", false, nil, 400, "key"},
		{"list", "GET", "/v1/pods", "", false, nil, 200, `"old"`},
		{"delete", "DELETE", "/v1/pods/old.eth0", "", false, nil, 204, ""},
		{"delete absent", "DELETE", "/v1/pods/nope.eth0", "", false, nil, 204, ""},
		{"delete not ready", "DELETE", "/v1/pods/old.eth0", "", true, nil, 503, "not ready"},
		{"delete bad key", "DELETE", "/v1/pods/a.", "", false, nil, 400, "key"},
		{"ready", "GET", "/v1/ready", "", false, nil, 200, "true"},
		{"not ready", "GET", "/v1/ready", "", true, nil, 503, "restoring"},
		{"gc", "POST", "/v1/gc", `{"valid":[{"containerID":"old","ifName":"eth0"}]}`, false, nil, 200, `"removed":[]`},
		{"gc bad attachment", "POST", "/v1/gc", `{"valid":[{"containerID":"","ifName":"eth0"}]}`, false, nil, 400, "valid[0]"},
		{"unknown route", "GET", "/v2/x", "", false, nil, 404, "no route"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fb := &fakeBackend{pods: map[string]cniapi.PodStatus{"old.eth0": registered}, notReady: tt.notReady, failWith: tt.failWith}
			srv := httptest.NewServer(NewHandler(Config{Pods: fb}))
			defer srv.Close()
			req, err := http.NewRequest(tt.method, srv.URL+tt.path, strings.NewReader(tt.body))
			if err != nil {
				t.Fatal(err)
			}
			resp, err := srv.Client().Do(req)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tt.wantCode {
				t.Fatalf("status %d, want %d; body %s", resp.StatusCode, tt.wantCode, b)
			}
			if !strings.Contains(string(b), tt.wantInBody) {
				t.Errorf("body %s does not contain %q", b, tt.wantInBody)
			}
			if resp.StatusCode >= 400 {
				var e cniapi.ErrorResponse
				if err := json.Unmarshal(b, &e); err != nil || e.Error == "" {
					t.Errorf("error body %s is not a cniapi.ErrorResponse", b)
				}
			}
		})
	}
}

// TestClientAgainstHandler checks the handler with the plugin's own client
// over a real unix socket created by Listen.
func TestClientAgainstHandler(t *testing.T) {
	sock := t.TempDir() + "/run/cni.sock"
	ln, err := Listen(sock)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	fb := &fakeBackend{pods: map[string]cniapi.PodStatus{}}
	go func() { done <- Serve(ctx, ln, NewHandler(Config{Pods: fb})) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
	}()

	c := cniapi.NewClient(sock)
	var pod cniapi.Pod
	if err := json.Unmarshal([]byte(goodPod), &pod); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Register(ctx, &pod); err != nil {
		t.Fatalf("register: %v", err)
	}
	if _, err := c.Get(ctx, pod.Attachment); err != nil {
		t.Fatalf("get: %v", err)
	}
	if err := c.Deregister(ctx, pod.Attachment); err != nil {
		t.Fatalf("deregister: %v", err)
	}
	if _, err := c.Get(ctx, pod.Attachment); !errors.Is(err, cniapi.ErrNotFound) {
		t.Fatalf("get after deregister: %v, want ErrNotFound", err)
	}
	if _, err := c.GC(ctx, []cniapi.Attachment{pod.Attachment}); err != nil || len(fb.gcValid) != 1 {
		t.Fatalf("gc: %v, backend got %v", err, fb.gcValid)
	}
	fb.notReady = true
	var se *cniapi.StatusError
	if err := c.Ready(ctx); !errors.As(err, &se) || !se.NotReady() {
		t.Fatalf("ready while restoring: %v, want a 503 StatusError", err)
	}
}
