package tunnel

import (
	"errors"
	"os"

	"github.com/meshless/meshless/daemon/identity"
	"github.com/meshless/meshless/daemon/metrics"
)

// Stages at which a server drops a tunnel connection.
const (
	// StageTLS: the mutual TLS handshake failed (plaintext, another CA or
	// trust domain, an expired or missing certificate, not a node).
	StageTLS = "tls"
	// StageHeader: the request header was bad, late or cut short.
	StageHeader = "header"
	// StageDial: the destination side refused the connection or could
	// not reach the application.
	StageDial = "dial"
	// StageReply: the OK reply could not be written.
	StageReply = "reply"
	// StageIdle: an authenticated connection ended before its first
	// header byte (a ready connection closed unused, or left unused past
	// the header timeout). Not a failure: Reason is empty.
	StageIdle = "idle"
)

// RejectError is what Server.OnReject receives: a tunnel connection dropped
// before its bytes were relayed, at which stage, and the status the client
// was sent (StatusOK when it was sent none).
type RejectError struct {
	// Stage is StageTLS, StageHeader, StageDial or StageReply.
	Stage string
	// Peer is the authenticated peer node; empty before the handshake.
	Peer string
	// Header is the request, when it was read.
	Header Header
	// Status is what the client was told; StatusOK when nothing was sent.
	Status Status
	// Err is the cause: the handshake's error (identity's refusals), a
	// header error (ErrBadMagic, ErrBadVersion, ErrTooLong, ErrMalformed,
	// os.ErrDeadlineExceeded, a read error), the Dialer's error, or the
	// write error of the reply.
	Err error
}

// Error returns "tunnel <stage>: <cause>".
func (e *RejectError) Error() string { return "tunnel " + e.Stage + ": " + e.Err.Error() }

// Unwrap returns the cause.
func (e *RejectError) Unwrap() error { return e.Err }

// Reasoner is an error that names its own failure reason; a Dialer's
// refusal that implements it is counted with that reason.
type Reasoner interface {
	error
	// FailureReason is the meshless_connection_failures_total label.
	FailureReason() string
}

// Reason returns the meshless_connection_failures_total label of the
// rejection; empty for StageIdle, which is not one.
func (e *RejectError) Reason() string {
	switch e.Stage {
	case StageIdle:
		return ""
	case StageTLS:
		return identity.Reason(e.Err)
	case StageReply:
		return metrics.ReasonReply
	case StageDial:
		if r := Reasoner(nil); errors.As(e.Err, &r) {
			return r.FailureReason()
		}
		switch e.Status {
		case StatusForbidden:
			return metrics.ReasonForbidden
		case StatusRefused:
			return metrics.ReasonRefused
		case StatusUnreachable:
			return metrics.ReasonUnreachable
		case StatusDenied:
			return metrics.ReasonDenied
		case StatusFull:
			return metrics.ReasonMaxConn
		}
		return metrics.ReasonDialFailed
	}
	switch {
	case errors.Is(e.Err, ErrBadMagic):
		return metrics.ReasonBadMagic
	case errors.Is(e.Err, ErrBadVersion):
		return metrics.ReasonBadVersion
	case errors.Is(e.Err, ErrTooLong):
		return metrics.ReasonTooLong
	case errors.Is(e.Err, ErrMalformed):
		return metrics.ReasonMalformed
	case errors.Is(e.Err, os.ErrDeadlineExceeded):
		return metrics.ReasonHeaderTimeout
	}
	return metrics.ReasonHeaderRead
}
