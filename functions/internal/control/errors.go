package control

import (
	"errors"
	"fmt"
)

// Errors the API maps to responses; each has a stable code.
var (
	// ErrNotFound: no such environment, or not the caller's (indistinguishable).
	ErrNotFound = errors.New("environment not found")
	// ErrEnvironmentNotRunning: JupyterLab runs only in a running environment.
	ErrEnvironmentNotRunning = errors.New("environment is not running")
	// ErrStopping: the previous instance is still stopping.
	ErrStopping = errors.New("jupyterlab is still stopping")
	// ErrNoFreePort: the host's port pool is exhausted.
	ErrNoFreePort = errors.New("no free port on the environment's host")
	// ErrHostUnavailable: the environment's host has been silent for
	// host_silence_seconds; a start there would never begin.
	ErrHostUnavailable = errors.New("the environment's host is not answering")
	// ErrLimit: the customer has as many active instances as allowed.
	ErrLimit = errors.New("too many active JupyterLab instances")
	// ErrUnavailable: a dependency failed; the request may be retried.
	ErrUnavailable = errors.New("service temporarily unavailable")
)

// InputError is a request the caller must change before retrying.
type InputError struct {
	Code    string
	Message string
	// Allowed lists the accepted values, where that helps the caller.
	Allowed []string
}

func (e *InputError) Error() string { return fmt.Sprintf("%s: %s", e.Code, e.Message) }

// unavailable marks a dependency's failure as ErrUnavailable, keeping the
// cause for the logs.
func unavailable(err error) error { return fmt.Errorf("%w: %w", ErrUnavailable, err) }
