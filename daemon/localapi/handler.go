// Package cniserver serves the cniapi routes on the daemon's unix socket,
// backed by the inpod.
//
//	ln, err := localapi.Listen("/run/meshless/cni.sock") // 0600, dir 0700
//	err = localapi.Serve(ctx, ln, localapi.NewHandler(agent, log))
package localapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"

	"github.com/meshless/meshless/daemon/cniapi"
	"github.com/meshless/meshless/daemon/inpod"
)

// maxBody bounds request bodies: a pod or a GC list is a few kilobytes; a
// GC list of a full node stays far below this.
const maxBody = 1 << 20

// Backend is what the API needs from the agent; *inpod.Manager implements
// it. Errors wrapping inpod.ErrInvalid answer 400, inpod.ErrNotReady 503.
type Backend interface {
	Register(ctx context.Context, pod *cniapi.Pod) (*cniapi.PodStatus, error)
	Deregister(ctx context.Context, a cniapi.Attachment) error
	Get(a cniapi.Attachment) (*cniapi.PodStatus, bool)
	List() []cniapi.PodStatus
	GC(ctx context.Context, valid []cniapi.Attachment) ([]cniapi.Attachment, error)
	Ready() error
}

var _ Backend = (*inpod.Manager)(nil)

// Config is what the API serves.
type Config struct {
	// Pods backs the pod routes. Required.
	Pods Backend
	// Status backs GET /v1/status; nil answers 404 there.
	Status *StatusSource
	// Logger defaults to slog.Default().
	Logger *slog.Logger
}

// NewHandler returns the http.Handler of every route of the socket.
func NewHandler(cfg Config) http.Handler {
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	s := &api{b: cfg.Pods, st: cfg.Status, log: log}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/pods", s.register)
	mux.HandleFunc("GET /v1/pods", s.list)
	mux.HandleFunc("GET /v1/pods/{key}", s.get)
	mux.HandleFunc("DELETE /v1/pods/{key}", s.deregister)
	mux.HandleFunc("GET /v1/ready", s.ready)
	mux.HandleFunc("POST /v1/gc", s.gc)
	mux.HandleFunc("GET /v1/status", s.status)
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		s.error(w, r, http.StatusNotFound, fmt.Errorf("no route %s %s", r.Method, r.URL.Path))
	})
	return mux
}

type api struct {
	b   Backend
	st  *StatusSource
	log *slog.Logger
}

func (s *api) register(w http.ResponseWriter, r *http.Request) {
	var pod cniapi.Pod
	if !s.decode(w, r, &pod) {
		return
	}
	st, err := s.b.Register(r.Context(), &pod)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	s.reply(w, http.StatusOK, st)
}

func (s *api) list(w http.ResponseWriter, r *http.Request) {
	s.reply(w, http.StatusOK, s.b.List())
}

func (s *api) get(w http.ResponseWriter, r *http.Request) {
	a, ok := s.key(w, r)
	if !ok {
		return
	}
	st, found := s.b.Get(a)
	if !found {
		s.error(w, r, http.StatusNotFound, fmt.Errorf("pod %s is not registered", a.Key()))
		return
	}
	s.reply(w, http.StatusOK, st)
}

func (s *api) deregister(w http.ResponseWriter, r *http.Request) {
	a, ok := s.key(w, r)
	if !ok {
		return
	}
	if err := s.b.Deregister(r.Context(), a); err != nil {
		s.fail(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (s *api) ready(w http.ResponseWriter, r *http.Request) {
	if err := s.b.Ready(); err != nil {
		s.error(w, r, http.StatusServiceUnavailable, err)
		return
	}
	s.reply(w, http.StatusOK, map[string]bool{"ready": true})
}

func (s *api) gc(w http.ResponseWriter, r *http.Request) {
	var req cniapi.GCRequest
	if !s.decode(w, r, &req) {
		return
	}
	for i, a := range req.Valid {
		if err := a.Validate(); err != nil {
			s.error(w, r, http.StatusBadRequest, fmt.Errorf("valid[%d]: %w", i, err))
			return
		}
	}
	removed, err := s.b.GC(r.Context(), req.Valid)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	if removed == nil {
		removed = []cniapi.Attachment{}
	}
	s.reply(w, http.StatusOK, &cniapi.GCResponse{Removed: removed})
}

// key parses the {key} path segment, answering 400 when it is invalid.
func (s *api) key(w http.ResponseWriter, r *http.Request) (cniapi.Attachment, bool) {
	a, err := cniapi.ParseKey(r.PathValue("key"))
	if err != nil {
		s.error(w, r, http.StatusBadRequest, fmt.Errorf("key: %w", err))
		return a, false
	}
	return a, true
}

// decode reads a bounded JSON body into v, answering 400 or 413 on failure.
func (s *api) decode(w http.ResponseWriter, r *http.Request, v any) bool {
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxBody))
	err := dec.Decode(v)
	if err == nil {
		// Trailing data after the object is a malformed request too.
		if dec.More() {
			err = errors.New("trailing data after JSON object")
		} else if _, terr := dec.Token(); terr != io.EOF {
			err = errors.New("trailing data after JSON object")
		}
	}
	if err == nil {
		return true
	}
	var tooBig *http.MaxBytesError
	var typeErr *json.UnmarshalTypeError
	switch {
	case errors.As(err, &tooBig):
		s.error(w, r, http.StatusRequestEntityTooLarge, fmt.Errorf("body larger than %d bytes", tooBig.Limit))
	case errors.Is(err, io.EOF):
		s.error(w, r, http.StatusBadRequest, errors.New("body: empty, want a JSON object"))
	case errors.As(err, &typeErr):
		s.error(w, r, http.StatusBadRequest, fmt.Errorf("body: field %s: %w", typeErr.Field, err))
	default:
		s.error(w, r, http.StatusBadRequest, fmt.Errorf("body: %w", err))
	}
	return false
}

// fail maps a backend error to its status.
func (s *api) fail(w http.ResponseWriter, r *http.Request, err error) {
	code := http.StatusInternalServerError
	switch {
	case errors.Is(err, inpod.ErrInvalid):
		code = http.StatusBadRequest
	case errors.Is(err, inpod.ErrNotReady):
		code = http.StatusServiceUnavailable
	case errors.Is(err, r.Context().Err()) && r.Context().Err() != nil:
		code = http.StatusServiceUnavailable
	}
	s.error(w, r, code, err)
}

func (s *api) error(w http.ResponseWriter, r *http.Request, code int, err error) {
	lvl := slog.LevelInfo
	if code >= 500 {
		lvl = slog.LevelError
	}
	s.log.Log(r.Context(), lvl, "cni api request failed", "method", r.Method, "path", r.URL.Path, "status", code, "err", err)
	s.reply(w, code, &cniapi.ErrorResponse{Error: err.Error()})
}

func (s *api) reply(w http.ResponseWriter, code int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		code = http.StatusInternalServerError
		b, _ = json.Marshal(&cniapi.ErrorResponse{Error: "encode answer: " + err.Error()})
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	w.Write(append(b, '\n'))
}
