package callengine

import "errors"

// Sentinel errors. Decoding errors wrap ErrMalformed so callers can tell
// hostile or broken input from transport failures.
var (
	// ErrMalformed marks event content that does not follow the Matrix VoIP
	// schema or exceeds the engine's limits.
	ErrMalformed = errors.New("callengine: malformed call event")
	// ErrUnknownType marks an event type the engine does not handle.
	ErrUnknownType = errors.New("callengine: unsupported call event type")
	// ErrBusy is returned when a ring is requested while one is active.
	ErrBusy = errors.New("callengine: call already in progress")
	// ErrNoResidents is returned when a ring has nobody to call.
	ErrNoResidents = errors.New("callengine: no residents to ring")
	// ErrStopped is returned when the engine is no longer running.
	ErrStopped = errors.New("callengine: engine stopped")
)
