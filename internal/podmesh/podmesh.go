// Package podmesh puts a pod's network namespace into the mesh and takes
// it out: the one sequence the CNI plugin runs on ADD and DEL and the
// daemon's enrollment runs for pods that were already running.
//
//	rules := podmesh.Redirect{Mode: redirect.ModeAuto}
//	backend, err := podmesh.Join(ctx, client, rules, pod) // registered, then rules
//	err = rules.Remove(pod.Netns)                         // a netns already gone is fine
//
// Join registers the pod first: the daemon answers once its listeners are
// open inside the pod's netns, so the rules written next never redirect the
// pod's traffic to a port nobody listens on. When the rules cannot be
// written the registration is rolled back, so a failed Join leaves the
// netns and the daemon as they were.
package podmesh

import (
	"context"
	"errors"
	"fmt"

	"github.com/meshless/meshless/daemon/cniapi"
	"github.com/meshless/meshless/internal/redirect"
)

// Registrar registers pods with the daemon: the daemon's local API client
// (cniapi.Client, in the plugin) or its pod manager (inpod.Manager, in the
// daemon itself).
type Registrar interface {
	// Register returns once the daemon's listeners are open in the pod.
	Register(ctx context.Context, pod *cniapi.Pod) (*cniapi.PodStatus, error)
	// Deregister removes a registration; an absent one is not an error.
	Deregister(ctx context.Context, att cniapi.Attachment) error
}

// Rules writes, checks and removes the redirection rules inside a netns;
// Redirect in production.
type Rules interface {
	// Apply writes spec's rules in the netns at path and returns the name
	// of the backend that wrote them.
	Apply(path string, spec redirect.Spec) (string, error)
	// Remove deletes them; a netns that no longer exists has none.
	Remove(path string) error
}

// RegisterError is Join's error when the registration itself failed;
// nothing was changed then. errors.As tells it from a rules failure, after
// which the registration was rolled back.
type RegisterError struct{ Err error }

// Error returns "register pod with daemon: <cause>".
func (e *RegisterError) Error() string { return "register pod with daemon: " + e.Err.Error() }

// Unwrap returns the cause.
func (e *RegisterError) Unwrap() error { return e.Err }

// Join registers pod with reg and writes its redirection rules into
// pod.Netns with rules; when the rules fail it deregisters the pod again.
// It returns the backend that wrote the rules.
func Join(ctx context.Context, reg Registrar, rules Rules, pod *cniapi.Pod) (string, error) {
	if _, err := reg.Register(ctx, pod); err != nil {
		return "", &RegisterError{Err: err}
	}
	backend, err := rules.Apply(pod.Netns, redirect.SpecFor(pod))
	if err != nil {
		err = fmt.Errorf("write redirection rules: %w", err)
		if derr := reg.Deregister(ctx, pod.Attachment); derr != nil {
			err = errors.Join(err, fmt.Errorf("roll back the registration: %w", derr))
		}
		return "", err
	}
	return backend, nil
}
