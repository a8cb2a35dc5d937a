// Package watchone follows one named Kubernetes object with the only two
// verbs a least-privilege role grants on a resourceName, get and watch
// (an informer would need list too):
//
//	err := watchone.Run(ctx, watchone.Funcs[*corev1.ConfigMap]{
//		Get: func(ctx context.Context) (*corev1.ConfigMap, error) {
//			return cs.CoreV1().ConfigMaps(ns).Get(ctx, name, metav1.GetOptions{})
//		},
//		Watch: func(ctx context.Context, rv string) (watch.Interface, error) {
//			return cs.CoreV1().ConfigMaps(ns).Watch(ctx, metav1.ListOptions{
//				FieldSelector: "metadata.name=" + name, ResourceVersion: rv})
//		},
//	}, func(cm *corev1.ConfigMap, exists bool) bool {
//		... // every version of the object; exists false when it is gone
//		return false // true ends Run
//	}, nil)
//
// It is shared by the signer (its CA Secret) and the node daemon (the
// trust bundle ConfigMap, its own CertificateSigningRequest), and links
// nothing but apimachinery, so the daemon stays small.
package watchone

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/watch"
)

// Object is what Run follows: a typed API object (a pointer).
type Object interface {
	runtime.Object
	GetResourceVersion() string
}

// Funcs reach the object.
type Funcs[T Object] struct {
	// Get reads the object; an error for which apierrors.IsNotFound
	// holds means it does not exist.
	Get func(ctx context.Context) (T, error)
	// Watch watches the object from resourceVersion rv ("" when the Get
	// found nothing: the watch then starts with the object, should it be
	// created meanwhile).
	Watch func(ctx context.Context, rv string) (watch.Interface, error)
}

// Backoff bounds of the retries after an error. An error here is the API
// server unreachable or refusing: retrying at once would only add load.
const (
	minBackoff = 200 * time.Millisecond
	maxBackoff = 30 * time.Second
)

// Run calls on with every version of the object it sees, in order: once
// after each Get (exists false if there is none), then for each watch
// event (exists false on deletion). The same version may come twice (a
// Get after a watch ended repeats the last one), so on must be
// idempotent. When a watch ends, which the API server does every few
// minutes, Run gets the object again and watches anew, so nothing is
// missed; errors are logged to log (slog.Default when nil) and retried
// with backoff. Run returns nil when on returns true, ctx.Err() when ctx
// is done.
func Run[T Object](ctx context.Context, f Funcs[T], on func(obj T, exists bool) (stop bool), log *slog.Logger) error {
	if log == nil {
		log = slog.Default()
	}
	backoff := time.Duration(0)
	for {
		if backoff > 0 {
			t := time.NewTimer(backoff)
			select {
			case <-ctx.Done():
				t.Stop()
				return ctx.Err()
			case <-t.C:
			}
		}
		stop, err := once(ctx, f, on)
		if stop {
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if err == nil {
			backoff = 0
			continue
		}
		backoff = min(max(2*backoff, minBackoff), maxBackoff)
		log.Warn("watch failed; retrying", "err", err, "retryIn", backoff)
	}
}

// once is one Get and one watch, until the watch ends (nil), fails
// (its error) or on says stop.
func once[T Object](ctx context.Context, f Funcs[T], on func(T, bool) bool) (bool, error) {
	obj, err := f.Get(ctx)
	var zero T
	rv := ""
	switch {
	case apierrors.IsNotFound(err):
		if on(zero, false) {
			return true, nil
		}
	case err != nil:
		return false, fmt.Errorf("get: %w", err)
	default:
		if on(obj, true) {
			return true, nil
		}
		rv = obj.GetResourceVersion()
	}
	w, err := f.Watch(ctx, rv)
	if err != nil {
		return false, fmt.Errorf("watch: %w", err)
	}
	defer w.Stop()
	for {
		var ev watch.Event
		var ok bool
		select {
		case <-ctx.Done():
			return false, nil
		case ev, ok = <-w.ResultChan():
		}
		if !ok {
			return false, nil // the server ended the watch: get again
		}
		switch ev.Type {
		case watch.Added, watch.Modified, watch.Deleted:
			o, isT := ev.Object.(T)
			if !isT {
				return false, fmt.Errorf("watch: event of type %T", ev.Object)
			}
			if on(o, ev.Type != watch.Deleted) {
				return true, nil
			}
		case watch.Error:
			// Every error ends the watch; the next Get starts from the
			// present. 410 Gone (the version is too old) is routine.
			err := apierrors.FromObject(ev.Object)
			if apierrors.IsGone(err) || apierrors.IsResourceExpired(err) {
				return false, nil
			}
			return false, fmt.Errorf("watch: %w", err)
		}
	}
}
