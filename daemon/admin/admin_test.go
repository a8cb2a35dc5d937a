package admin

import (
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/meshless/meshless/daemon/metrics"
)

func TestRoutes(t *testing.T) {
	m := metrics.New()
	m.Connections.WithLabelValues(metrics.Outbound, metrics.PathPassthrough).Inc()
	tests := []struct {
		name     string
		ready    error
		path     string
		wantCode int
		want     string
	}{
		{"healthz while restoring", errors.New("restoring state"), "/healthz", 200, "ok"},
		{"readyz ready", nil, "/readyz", 200, "ready"},
		{"readyz restoring", errors.New("restoring state"), "/readyz", 503, "restoring state"},
		{"metrics", nil, "/metrics", 200, `meshless_connections_total{direction="outbound",path="passthrough"} 1`},
		{"metrics race zero", nil, "/metrics", 200, `meshless_race_total{result="lost"} 0`},
		{"metrics pods", nil, "/metrics", 200, "meshless_pods 0"},
		{"unknown", nil, "/nope", 404, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := httptest.NewServer(NewHandler(func() error { return tt.ready }, m.Registry))
			defer srv.Close()
			resp, err := srv.Client().Get(srv.URL + tt.path)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tt.wantCode || !strings.Contains(string(b), tt.want) {
				t.Errorf("GET %s = %d %.300q, want %d with %q", tt.path, resp.StatusCode, b, tt.wantCode, tt.want)
			}
		})
	}
}

func TestPprofOnlyWhenAsked(t *testing.T) {
	m := metrics.New()
	h := NewHandler(func() error { return nil }, m.Registry)
	for _, c := range []struct {
		name string
		h    http.Handler
		want int
	}{{"off", h, 404}, {"on", WithPprof(h), 200}} {
		srv := httptest.NewServer(c.h)
		resp, err := srv.Client().Get(srv.URL + "/debug/pprof/")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != c.want {
			t.Errorf("%s: GET /debug/pprof/ = %d, want %d", c.name, resp.StatusCode, c.want)
		}
		resp, err = srv.Client().Get(srv.URL + "/readyz")
		if err != nil || resp.StatusCode != 200 {
			t.Errorf("%s: /readyz %v %v", c.name, resp, err)
		}
		resp.Body.Close()
		srv.Close()
	}
}
