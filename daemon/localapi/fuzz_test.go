package localapi

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/meshless/meshless/daemon/cniapi"
)

// FuzzRequests sends the socket's decoding routes (a pod registration, a
// GC list) arbitrary bodies: the handler never panics, answers 400 for
// what it cannot use, and passes on only pods that validate.
func FuzzRequests(f *testing.F) {
	for _, s := range []string{
		`{"containerID":"c1","ifName":"eth0","netns":"/run/netns/x","ips":["198.19.1.2"],"namespace":"default","name":"p"}`,
		`{"containerID":"c1/../x","ifName":"eth0","netns":"/run/netns/x","ips":["198.19.1.2"]}`,
		`{"valid":[{"containerID":"c1","ifName":"eth0"}]}`,
		`{"ips":["::ffff:1.2.3.4"],"exclusions":{"inboundPorts":[0,65535],"outboundCIDRs":["0.0.0.0/0"]}}`,
		`{`, `null`, `[1,2]`,
	} {
		f.Add("/v1/pods", []byte(s))
		f.Add("/v1/gc", []byte(s))
	}
	f.Fuzz(func(t *testing.T, path string, body []byte) {
		if path != "/v1/pods" && path != "/v1/gc" {
			return
		}
		fb := &fakeBackend{pods: map[string]cniapi.PodStatus{}}
		h := NewHandler(Config{Pods: fb})
		w := httptest.NewRecorder()
		h.ServeHTTP(w, httptest.NewRequest(http.MethodPost, path, bytes.NewReader(body)))
		if w.Code != http.StatusOK && w.Code != http.StatusBadRequest {
			t.Fatalf("POST %s %q: status %d", path, body, w.Code)
		}
		for _, p := range fb.pods {
			if err := p.Validate(); err != nil {
				t.Fatalf("an invalid pod reached the backend: %v", err)
			}
		}
	})
}
