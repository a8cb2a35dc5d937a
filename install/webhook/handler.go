package webhook

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	sigsjson "sigs.k8s.io/json"
)

// Path is the URL path the webhook is served at: the path of the
// MutatingWebhookConfiguration's clientConfig.service.
const Path = "/meshlet-dir"

// MaxBodyBytes bounds an AdmissionReview. The API server refuses objects
// over 3 MiB (its request limit; etcd's is 1.5 MiB), and a review of a
// pod creation carries one object plus a few hundred bytes; re-encoded
// as JSON from YAML or protobuf it may grow, hence the margin.
const MaxBodyBytes = 8 << 20

// Options configure a Handler.
type Options struct {
	// Logger; slog.Default when nil.
	Logger *slog.Logger
	// Registerer, when not nil, gets the metric
	// meshless_webhook_reviews_total{result} (see Result).
	Registerer prometheus.Registerer
}

// Handler answers AdmissionReview v1 requests for pods with Mutate's
// patch. It never denies a pod it could read: the webhook adds a folder,
// it is no policy.
type Handler struct {
	log     *slog.Logger
	reviews *prometheus.CounterVec
}

// NewHandler makes a Handler; it fails only if the metric cannot be
// registered.
func NewHandler(opts Options) (*Handler, error) {
	h := &Handler{
		log: opts.Logger,
		reviews: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meshless_webhook_reviews_total",
			Help: "Admission reviews answered by the /meshlet webhook, by result: injected, present (nothing to add), skipped (a /meshlet of the pod's own), ignored (not a pod of a Meshlet, not a creation), error (unreadable review).",
		}, []string{"result"}),
	}
	if h.log == nil {
		h.log = slog.Default()
	}
	for _, r := range []Result{ResultInjected, ResultPresent, ResultSkipped, ResultIgnored, ResultError} {
		h.reviews.WithLabelValues(string(r)) // present at 0 from the start
	}
	if opts.Registerer != nil {
		if err := opts.Registerer.Register(h.reviews); err != nil {
			return nil, fmt.Errorf("webhook metrics: %w", err)
		}
	}
	return h, nil
}

// ServeHTTP reads one AdmissionReview (POST, application/json, at most
// MaxBodyBytes) and answers it. A request that is no AdmissionReview v1
// gets an HTTP error, which the API server treats as a failed call (the
// configuration's failurePolicy).
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		http.Error(w, "POST an AdmissionReview", http.StatusMethodNotAllowed)
		return
	}
	if mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type")); err != nil || mt != "application/json" {
		h.reviews.WithLabelValues(string(ResultError)).Inc()
		http.Error(w, "content type must be application/json", http.StatusUnsupportedMediaType)
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxBodyBytes))
	if err != nil {
		h.reviews.WithLabelValues(string(ResultError)).Inc()
		code := http.StatusBadRequest
		if _, ok := errors.AsType[*http.MaxBytesError](err); ok {
			code = http.StatusRequestEntityTooLarge
		}
		http.Error(w, "read review: "+err.Error(), code)
		return
	}
	out, status, err := h.review(body)
	if err != nil {
		h.log.Warn("admission review refused", "remote", r.RemoteAddr, "err", err)
		http.Error(w, err.Error(), status)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(out)
}

// review answers the AdmissionReview in body: the encoded response
// review, or an error and the HTTP status that says why body is none.
func (h *Handler) review(body []byte) ([]byte, int, error) {
	in, err := decodeReview(body)
	if err != nil {
		h.reviews.WithLabelValues(string(ResultError)).Inc()
		return nil, http.StatusBadRequest, err
	}
	resp, result := h.respond(in.Request)
	h.reviews.WithLabelValues(string(result)).Inc()
	out, err := json.Marshal(&admissionv1.AdmissionReview{
		TypeMeta: in.TypeMeta,
		Response: resp,
	})
	if err != nil {
		return nil, http.StatusInternalServerError, fmt.Errorf("encode review: %w", err)
	}
	return out, http.StatusOK, nil
}

// respond decides a request: a pod creation gets Mutate's patch,
// anything else is allowed as it is.
func (h *Handler) respond(req *admissionv1.AdmissionRequest) (*admissionv1.AdmissionResponse, Result) {
	resp := &admissionv1.AdmissionResponse{UID: req.UID, Allowed: true}
	if req.Operation != admissionv1.Create || req.SubResource != "" ||
		req.Resource != (metav1.GroupVersionResource{Version: "v1", Resource: "pods"}) {
		return resp, ResultIgnored
	}
	pod, err := decodePod(req.Object.Raw)
	if err != nil {
		// Unreachable with an API server, which encoded the pod itself;
		// saying so beats a patch computed from a pod misread.
		resp.Allowed = false
		resp.Result = &metav1.Status{Status: metav1.StatusFailure, Code: http.StatusBadRequest, Reason: metav1.StatusReasonBadRequest,
			Message: "meshless webhook: " + err.Error()}
		return resp, ResultError
	}
	ops, result, reason := Mutate(pod)
	name := pod.Name
	if name == "" {
		name = pod.GenerateName + "*"
	}
	switch result {
	case ResultSkipped:
		h.log.Info("pod has a /meshlet of its own; left alone", "namespace", req.Namespace, "pod", name, "reason", reason)
	case ResultInjected:
		h.log.Debug("/meshlet injected", "namespace", req.Namespace, "pod", name, "operations", len(ops))
	}
	if len(ops) == 0 {
		return resp, result
	}
	patch, err := json.Marshal(ops)
	if err != nil {
		resp.Allowed = false
		resp.Result = &metav1.Status{Status: metav1.StatusFailure, Code: http.StatusInternalServerError, Message: "meshless webhook: " + err.Error()}
		return resp, ResultError
	}
	pt := admissionv1.PatchTypeJSONPatch
	resp.Patch, resp.PatchType = patch, &pt
	return resp, result
}

// decodeReview decodes an AdmissionReview v1 request strictly: case
// sensitive, no duplicate field (two readers of the same bytes must not
// see different pods), nothing after the object, apiVersion
// admission.k8s.io/v1 and kind AdmissionReview, a request with a UID.
// Unknown fields are accepted: Kubernetes adds optional fields to a
// version (API conventions), and with failurePolicy Fail refusing them
// would stop every pod of a Meshlet when the API server is upgraded.
func decodeReview(body []byte) (*admissionv1.AdmissionReview, error) {
	var rv admissionv1.AdmissionReview
	strict, err := sigsjson.UnmarshalStrict(body, &rv, sigsjson.DisallowDuplicateFields)
	if err != nil {
		return nil, fmt.Errorf("decode review: %w", err)
	}
	if len(strict) > 0 {
		return nil, fmt.Errorf("decode review: %w", errors.Join(strict...))
	}
	if gv := admissionv1.SchemeGroupVersion.String(); rv.APIVersion != gv || rv.Kind != "AdmissionReview" {
		return nil, fmt.Errorf("decode review: %s %s, want %s AdmissionReview", rv.APIVersion, rv.Kind, gv)
	}
	if rv.Request == nil || rv.Request.UID == "" {
		return nil, errors.New("decode review: no request, or a request without uid")
	}
	if rv.Response != nil {
		return nil, errors.New("decode review: a request must not carry a response")
	}
	return &rv, nil
}

// decodePod decodes the object of a review as decodeReview decodes the
// review (unknown fields accepted: pods gain fields every release).
func decodePod(raw []byte) (*corev1.Pod, error) {
	if len(raw) == 0 {
		return nil, errors.New("decode pod: no object")
	}
	var pod corev1.Pod
	strict, err := sigsjson.UnmarshalStrict(raw, &pod, sigsjson.DisallowDuplicateFields)
	if err != nil {
		return nil, fmt.Errorf("decode pod: %w", err)
	}
	if len(strict) > 0 {
		return nil, fmt.Errorf("decode pod: %w", errors.Join(strict...))
	}
	if pod.Kind != "" && (pod.Kind != "Pod" || pod.APIVersion != "v1") {
		return nil, fmt.Errorf("decode pod: object is %s %s, want v1 Pod", pod.APIVersion, pod.Kind)
	}
	return &pod, nil
}
