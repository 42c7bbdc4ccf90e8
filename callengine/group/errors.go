package group

import "errors"

var (
	// ErrMalformed wraps every refusal of untrusted content.
	ErrMalformed = errors.New("group: malformed event")
	// ErrUnknownType is returned for to-device types outside both call
	// families, or call types the machine does not handle.
	ErrUnknownType = errors.New("group: unknown event type")
	// ErrStateKey is returned for a membership state key that does not
	// belong to its sender under any of famedly's conventions.
	ErrStateKey = errors.New("group: state key not owned by sender")
)

// errNoPeer is the outcome of an answer for a call whose peer is gone.
var errNoPeer = errors.New("group: no peer for this call")
