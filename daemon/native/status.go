package native

import (
	"errors"
	"fmt"
	"io"
	"os"
)

// Status is the daemon's answer to a request.
type Status uint8

// Statuses. Values are part of the wire format; 11 to 255 are reserved,
// and a client treats any status it does not know as a refusal.
const (
	// StatusOK: connected; the service's bytes flow from now on, on this
	// connection or on the one handed over (Reply.Handoff).
	StatusOK Status = 0
	// StatusBadVersion: the daemon does not speak the request's version;
	// the reply's version byte is the one it speaks.
	StatusBadVersion Status = 1
	// StatusMalformed: the request was not well-formed (bad magic, flags,
	// names or extensions).
	StatusMalformed Status = 2
	// StatusTooLong: the request announced more than MaxRequestLen bytes.
	StatusTooLong Status = 3
	// StatusTimeout: the request did not arrive whole within the daemon's
	// RequestTimeout.
	StatusTimeout Status = 4
	// StatusUnknownService: no Meshlet serves that namespace/meshlet/service.
	StatusUnknownService Status = 5
	// StatusNotAllowed: the client's Meshlet does not declare the service
	// among its clients (access control).
	StatusNotAllowed Status = 6
	// StatusNoInstance: the service exists but has no ready instance (or
	// none of a version with a canary weight).
	StatusNoInstance Status = 7
	// StatusAllFull: every instance is at the service's maxConn.
	StatusAllFull Status = 8
	// StatusUnreachable: instances exist, but connecting to every one of
	// them failed or timed out.
	StatusUnreachable Status = 9
	// StatusInternal: any other failure of the daemon.
	StatusInternal Status = 10
)

// Refusal errors, one per failure status; StatusError.Is matches them, so
// errors.Is(err, native.ErrAllFull) tests a Dial error for that refusal.
// Statuses 1 to 3 use the decoding errors ErrBadVersion, ErrMalformed and
// ErrTooLong.
var (
	// ErrRefused matches every refusal, whatever its status.
	ErrRefused = errors.New("refused")
	// ErrRequestTimeout matches StatusTimeout.
	ErrRequestTimeout = errors.New("request timed out")
	// ErrUnknownService matches StatusUnknownService.
	ErrUnknownService = errors.New("unknown service")
	// ErrNotAllowed matches StatusNotAllowed.
	ErrNotAllowed = errors.New("not allowed")
	// ErrNoInstance matches StatusNoInstance.
	ErrNoInstance = errors.New("no instance")
	// ErrAllFull matches StatusAllFull.
	ErrAllFull = errors.New("all instances full")
	// ErrUnreachable matches StatusUnreachable.
	ErrUnreachable = errors.New("unreachable")
	// ErrInternal matches StatusInternal.
	ErrInternal = errors.New("internal error")
)

// Err returns the error that stands for s: nil for StatusOK, ErrRefused
// for a status this version does not know.
func (s Status) Err() error {
	switch s {
	case StatusOK:
		return nil
	case StatusBadVersion:
		return ErrBadVersion
	case StatusMalformed:
		return ErrMalformed
	case StatusTooLong:
		return ErrTooLong
	case StatusTimeout:
		return ErrRequestTimeout
	case StatusUnknownService:
		return ErrUnknownService
	case StatusNotAllowed:
		return ErrNotAllowed
	case StatusNoInstance:
		return ErrNoInstance
	case StatusAllFull:
		return ErrAllFull
	case StatusUnreachable:
		return ErrUnreachable
	case StatusInternal:
		return ErrInternal
	}
	return ErrRefused
}

// String returns the status's name.
func (s Status) String() string {
	if s == StatusOK {
		return "ok"
	}
	if err := s.Err(); err != ErrRefused {
		return err.Error()
	}
	return fmt.Sprintf("status %d", uint8(s))
}

// StatusFor returns the status a daemon answers for err: the status of
// the first sentinel err wraps (ReadRequest's decoding errors, or a
// refusal error such as ErrAllFull that the daemon's own code wrapped),
// StatusTimeout for an expired deadline, StatusMalformed for a request
// cut short by the client, and StatusInternal for anything else. It
// returns StatusOK for a nil err.
func StatusFor(err error) Status {
	switch {
	case err == nil:
		return StatusOK
	case errors.Is(err, ErrBadMagic):
		return StatusMalformed
	case errors.Is(err, os.ErrDeadlineExceeded):
		return StatusTimeout
	}
	for s := StatusBadVersion; s <= StatusInternal; s++ {
		if errors.Is(err, s.Err()) {
			return s
		}
	}
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return StatusMalformed
	}
	return StatusInternal
}

// StatusError is a refusal received from the daemon. It matches
// ErrRefused and its status's error with errors.Is.
type StatusError struct {
	// Status is the failure the daemon reported, never StatusOK.
	Status Status
	// Version is the version of the daemon's reply: for StatusBadVersion,
	// the version the daemon speaks.
	Version uint8
	// Message is the daemon's explanation, for people; may be empty.
	Message string
}

// Error returns "refused: <status>[: <message>]".
func (e *StatusError) Error() string {
	s := "refused: " + e.Status.String()
	if e.Status == StatusBadVersion {
		s += fmt.Sprintf(" (daemon speaks %d, client %d)", e.Version, Version)
	}
	if e.Message != "" {
		s += ": " + e.Message
	}
	return s
}

// Is reports whether target is ErrRefused or the error of e's status.
func (e *StatusError) Is(target error) bool {
	return target == ErrRefused || target == e.Status.Err()
}
