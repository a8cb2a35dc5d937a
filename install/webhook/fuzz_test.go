package webhook

import (
	"encoding/json"
	"net/http"
	"testing"

	jsonpatch "gopkg.in/evanphx/json-patch.v4"
	admissionv1 "k8s.io/api/admission/v1"
)

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
