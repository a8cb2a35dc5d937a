package kube

import (
	"context"
	"log/slog"
	"math/rand/v2"
	"strings"
	"sync"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/meshless/meshless/daemon/meshlet"
)

// statusWriter reports in each Meshlet's status whether the daemons use
// it: the Accepted condition, True, or False with what to fix.
//
// Every daemon computes the same verdicts from the same objects, and a
// cluster has hundreds of daemons, so the writes are arranged to be few:
// a daemon writes only a status that differs from the one in its cache,
// after a random delay (up to Options.StatusDelay), re-reading its cache
// first; the write is an update with the resourceVersion it read, so of
// daemons racing one wins and the others get a conflict and drop theirs.
// In practice one daemon writes each change. Writes need update on
// meshlets/status; without it (forbidden) the source stops trying and
// reports in its log and Status only.
type statusWriter struct {
	update func(context.Context, *MeshletObject) error
	get    func(namespace, name string) *MeshletObject
	log    *slog.Logger
	delay  time.Duration

	mu       sync.Mutex
	ctx      context.Context
	want     map[string]verdict // "namespace/name" -> latest verdict
	pending  map[string]bool
	disabled bool
}

// verdict is the Accepted condition one Meshlet generation should carry.
type verdict struct {
	generation int64
	status     metav1.ConditionStatus
	reason     string
	message    string
}

// maxMessage bounds a condition's message (the schema allows 32 KiB).
const maxMessage = 4096

func verdictOf(r meshletResult) verdict {
	v := verdict{generation: r.obj.Generation, status: metav1.ConditionTrue, reason: ReasonValid, message: "used by meshlessd"}
	if len(r.errs) > 0 {
		v.status, v.reason = metav1.ConditionFalse, ReasonInvalid
		v.message = "left out by meshlessd, fix: " + strings.Join(r.errs, "; ")
		if len(v.message) > maxMessage {
			v.message = v.message[:maxMessage-3] + "..."
		}
	}
	return v
}

// upToDate reports whether o's status already says v.
func upToDate(o *MeshletObject, v verdict) bool {
	c := meta.FindStatusCondition(o.Status.Conditions, ConditionAccepted)
	return c != nil && o.Status.ObservedGeneration == v.generation && c.ObservedGeneration == v.generation &&
		c.Status == v.status && c.Reason == v.reason && c.Message == v.message
}

// report takes the verdicts of one translation and schedules a write for
// each Meshlet whose status does not say its verdict yet.
func (w *statusWriter) report(ctx context.Context, results []meshletResult) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.update == nil || w.disabled {
		return
	}
	w.ctx = ctx
	w.want = make(map[string]verdict, len(results))
	if w.pending == nil {
		w.pending = map[string]bool{}
	}
	for _, r := range results {
		k := r.obj.Namespace + "/" + r.obj.Name
		v := verdictOf(r)
		w.want[k] = v
		if !upToDate(r.obj, v) && !w.pending[k] {
			w.pending[k] = true
			time.AfterFunc(rand.N(w.delay+1), func() { w.write(k) })
		}
	}
}

// write writes the status of the Meshlet k if it still needs it.
func (w *statusWriter) write(k string) {
	w.mu.Lock()
	delete(w.pending, k)
	v, ok := w.want[k]
	ctx, disabled := w.ctx, w.disabled
	w.mu.Unlock()
	if !ok || disabled || ctx.Err() != nil {
		return
	}
	ns, name, _ := strings.Cut(k, "/")
	o := w.get(ns, name)
	if o == nil || o.Generation != v.generation || upToDate(o, v) {
		return // gone, changed (the next translation decides) or written by another daemon
	}
	u := &MeshletObject{
		TypeMeta:   metav1.TypeMeta{APIVersion: meshlet.APIVersion, Kind: meshlet.Kind},
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, ResourceVersion: o.ResourceVersion},
		Status:     MeshletStatus{ObservedGeneration: v.generation, Conditions: o.DeepCopy().Status.Conditions},
	}
	meta.SetStatusCondition(&u.Status.Conditions, metav1.Condition{
		Type: ConditionAccepted, Status: v.status, Reason: v.reason, Message: v.message, ObservedGeneration: v.generation,
	})
	wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	err := w.update(wctx, u)
	switch {
	case err == nil:
		w.log.Debug("kubernetes discovery: meshlet status written", "meshlet", k, "accepted", v.status)
	case apierrors.IsConflict(err) || apierrors.IsNotFound(err) || ctx.Err() != nil:
		// Another daemon wrote first, or the Meshlet is gone: the watch
		// brings the news and the next translation decides.
	case apierrors.IsForbidden(err):
		w.mu.Lock()
		w.disabled = true
		w.mu.Unlock()
		w.log.Warn("kubernetes discovery: cannot write Meshlet status (RBAC: update on meshlets/status); rejected Meshlets are reported in this log only", "err", err)
	default:
		w.log.Warn("kubernetes discovery: meshlet status not written; retrying", "meshlet", k, "err", err)
		w.mu.Lock()
		if !w.pending[k] {
			w.pending[k] = true
			time.AfterFunc(w.delay+time.Second, func() { w.write(k) })
		}
		w.mu.Unlock()
	}
}
