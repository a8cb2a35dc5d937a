package webhook

import (
	"bytes"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	jsonpatch "gopkg.in/evanphx/json-patch.v4"
	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
)

// review is an AdmissionReview of the creation of p, as the API server
// sends it.
func review(t testing.TB, p *corev1.Pod) []byte {
	t.Helper()
	raw, err := json.Marshal(p)
	if err != nil {
		t.Fatal(err)
	}
	b, err := json.Marshal(&admissionv1.AdmissionReview{
		TypeMeta: metav1.TypeMeta{APIVersion: "admission.k8s.io/v1", Kind: "AdmissionReview"},
		Request: &admissionv1.AdmissionRequest{
			UID:       "7f1c2d3e-0000-4000-8000-000000000001",
			Kind:      metav1.GroupVersionKind{Version: "v1", Kind: "Pod"},
			Resource:  metav1.GroupVersionResource{Version: "v1", Resource: "pods"},
			Namespace: p.Namespace, Name: p.Name,
			Operation: admissionv1.Create,
			Object:    runtime.RawExtension{Raw: raw},
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func newTestHandler(t testing.TB) (*Handler, *prometheus.Registry) {
	t.Helper()
	reg := prometheus.NewRegistry()
	h, err := NewHandler(Options{Logger: slog.New(slog.DiscardHandler), Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	return h, reg
}

// count is the value of meshless_webhook_reviews_total{result=r}.
func count(t testing.TB, h *Handler, r Result) float64 {
	t.Helper()
	var m dto.Metric
	if err := h.reviews.WithLabelValues(string(r)).Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetCounter().GetValue()
}

// post sends body to h and returns the status and body of the answer.
func post(h http.Handler, method, contentType string, body []byte) (int, []byte) {
	req := httptest.NewRequest(method, Path, bytes.NewReader(body))
	req.Header.Set("Content-Type", contentType)
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	out, _ := io.ReadAll(rec.Result().Body)
	return rec.Code, out
}

// response decodes an answer and checks its envelope.
func response(t *testing.T, body []byte) *admissionv1.AdmissionResponse {
	t.Helper()
	var rv admissionv1.AdmissionReview
	if err := json.Unmarshal(body, &rv); err != nil {
		t.Fatalf("answer %s: %v", body, err)
	}
	if rv.APIVersion != "admission.k8s.io/v1" || rv.Kind != "AdmissionReview" || rv.Response == nil || rv.Request != nil {
		t.Fatalf("answer envelope: %s", body)
	}
	if rv.Response.UID != "7f1c2d3e-0000-4000-8000-000000000001" {
		t.Errorf("answer uid %q", rv.Response.UID)
	}
	return rv.Response
}

func TestHandlerPatchesAPodOfAMeshlet(t *testing.T) {
	h, reg := newTestHandler(t)
	p := pod([]string{"init"}, "app")
	code, body := post(h, http.MethodPost, "application/json; charset=utf-8", review(t, p))
	if code != http.StatusOK {
		t.Fatalf("status %d: %s", code, body)
	}
	resp := response(t, body)
	if !resp.Allowed || resp.PatchType == nil || *resp.PatchType != admissionv1.PatchTypeJSONPatch {
		t.Fatalf("response %+v", resp)
	}
	var ops []Operation
	if err := json.Unmarshal(resp.Patch, &ops); err != nil {
		t.Fatal(err)
	}
	checkInjected(t, apply(t, p, ops))
	if got := count(t, h, ResultInjected); got != 1 {
		t.Errorf("injected reviews %v", got)
	}
	mfs, err := reg.Gather()
	if err != nil || len(mfs) != 1 || mfs[0].GetName() != "meshless_webhook_reviews_total" || len(mfs[0].GetMetric()) != 5 {
		t.Errorf("registry: %v, %v; want the counter with one series per result", mfs, err)
	}
}

func TestHandlerAllowsWhatItDoesNotChange(t *testing.T) {
	h, _ := newTestHandler(t)
	other := pod(nil, "app")
	other.Labels = nil
	update := review(t, pod(nil, "app"))
	update = bytes.Replace(update, []byte(`"operation":"CREATE"`), []byte(`"operation":"UPDATE"`), 1)
	service := bytes.Replace(review(t, pod(nil, "app")), []byte(`"resource":"pods"`), []byte(`"resource":"services"`), 1)
	binding := bytes.Replace(review(t, pod(nil, "app")), []byte(`"operation"`), []byte(`"subResource":"binding","operation"`), 1)
	for name, body := range map[string][]byte{"no label": review(t, other), "update": update, "service": service, "subresource": binding} {
		code, out := post(h, http.MethodPost, "application/json", body)
		if code != http.StatusOK {
			t.Fatalf("%s: status %d: %s", name, code, out)
		}
		if resp := response(t, out); !resp.Allowed || resp.Patch != nil || resp.PatchType != nil {
			t.Errorf("%s: %+v, want allowed as it is", name, resp)
		}
	}
	if got := count(t, h, ResultIgnored); got != 4 {
		t.Errorf("ignored reviews %v, want 4", got)
	}
}

func TestHandlerRefusesWhatIsNoReview(t *testing.T) {
	h, _ := newTestHandler(t)
	good := string(review(t, pod(nil, "app")))
	cases := []struct {
		name, method, ctype, body string
		code                      int
	}{
		{"get", http.MethodGet, "application/json", good, http.StatusMethodNotAllowed},
		{"yaml", http.MethodPost, "application/yaml", good, http.StatusUnsupportedMediaType},
		{"no content type", http.MethodPost, "", good, http.StatusUnsupportedMediaType},
		{"empty", http.MethodPost, "application/json", "", http.StatusBadRequest},
		{"not json", http.MethodPost, "application/json", "{", http.StatusBadRequest},
		{"trailing data", http.MethodPost, "application/json", good + "{}", http.StatusBadRequest},
		{"duplicate field", http.MethodPost, "application/json", strings.Replace(good, `"request":`, `"request":null,"request":`, 1), http.StatusBadRequest},
		{"duplicate in the pod", http.MethodPost, "application/json", strings.Replace(good, `"labels":`, `"labels":{},"labels":`, 1), http.StatusOK},
		{"case", http.MethodPost, "application/json", strings.Replace(good, `"request":`, `"Request":`, 1), http.StatusBadRequest},
		{"v1beta1", http.MethodPost, "application/json", strings.Replace(good, "admission.k8s.io/v1", "admission.k8s.io/v1beta1", 1), http.StatusBadRequest},
		{"no uid", http.MethodPost, "application/json", strings.Replace(good, `"uid":"7f1c2d3e-0000-4000-8000-000000000001"`, `"uid":""`, 1), http.StatusBadRequest},
		{"with a response", http.MethodPost, "application/json", strings.Replace(good, `"request":`, `"response":{"uid":"x","allowed":true},"request":`, 1), http.StatusBadRequest},
		{"too large", http.MethodPost, "application/json", `{"x":"` + strings.Repeat("a", MaxBodyBytes) + `"}`, http.StatusRequestEntityTooLarge},
	}
	for _, tc := range cases {
		code, out := post(h, tc.method, tc.ctype, []byte(tc.body))
		if code != tc.code {
			t.Errorf("%s: status %d (%s), want %d", tc.name, code, strings.TrimSpace(string(out)), tc.code)
		}
	}
	// A pod read twice differently must not be patched: refused in the
	// response, so the API server says why.
	_, out := post(h, http.MethodPost, "application/json", []byte(cases[7].body))
	if resp := response(t, out); resp.Allowed || resp.Result == nil || !strings.Contains(resp.Result.Message, "duplicate field") {
		t.Errorf("pod with a duplicate field: %+v", resp)
	}
}

// TestHandlerAcceptsUnknownFields: a newer API server may add optional
// fields to the review; refusing them would stop every pod of a Meshlet.
func TestHandlerAcceptsUnknownFields(t *testing.T) {
	h, _ := newTestHandler(t)
	body := strings.Replace(string(review(t, pod(nil, "app"))), `"operation"`, `"futureField":{"a":1},"operation"`, 1)
	code, out := post(h, http.MethodPost, "application/json", []byte(body))
	if code != http.StatusOK {
		t.Fatalf("status %d: %s", code, out)
	}
	if resp := response(t, out); !resp.Allowed || resp.Patch == nil {
		t.Errorf("%+v", resp)
	}
}

// FuzzAdmissionReview feeds the handler arbitrary bodies. Whatever it
// reads, it must not panic; an answer must be an AdmissionReview v1 for
// the request's UID; and a patch must apply to the pod as the API server
// encodes it (a typed Pod, which is what it sends and patches), leaving
// a pod that needs nothing more: re-invocation adds nothing. The seed
// corpus (testdata/fuzz/FuzzAdmissionReview) holds the reviews of the
// unit tests and a few broken ones; `go test` replays it.
func FuzzAdmissionReview(f *testing.F) {
	h, _ := newTestHandler(f)
	f.Fuzz(func(t *testing.T, body []byte) {
		out, status, err := h.review(body)
		if err != nil {
			if status != http.StatusBadRequest {
				t.Fatalf("refused with status %d: %v", status, err)
			}
			return
		}
		in, err := decodeReview(body)
		if err != nil {
			t.Fatalf("answered a body it cannot decode: %v", err)
		}
		var rv admissionv1.AdmissionReview
		if err := json.Unmarshal(out, &rv); err != nil {
			t.Fatalf("answer %s: %v", out, err)
		}
		if rv.APIVersion != "admission.k8s.io/v1" || rv.Kind != "AdmissionReview" || rv.Response == nil || rv.Response.UID != in.Request.UID {
			t.Fatalf("answer %s to uid %q", out, in.Request.UID)
		}
		if rv.Response.Patch == nil {
			return
		}
		pod, err := decodePod(in.Request.Object.Raw)
		if err != nil {
			t.Fatalf("patched a pod it cannot decode: %v", err)
		}
		doc, err := json.Marshal(pod)
		if err != nil {
			t.Fatal(err)
		}
		p, err := jsonpatch.DecodePatch(rv.Response.Patch)
		if err != nil {
			t.Fatalf("patch %s: %v", rv.Response.Patch, err)
		}
		patched, err := p.Apply(doc)
		if err != nil {
			t.Fatalf("patch %s does not apply to %s: %v", rv.Response.Patch, doc, err)
		}
		after, err := decodePod(patched)
		if err != nil {
			t.Fatalf("patched pod %s: %v", patched, err)
		}
		if ops, result, _ := Mutate(after); len(ops) != 0 {
			t.Fatalf("not idempotent: %s then %+v on %s", result, ops, patched)
		}
	})
}
