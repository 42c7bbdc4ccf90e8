package rtc

import "errors"

var (
	// ErrMalformed wraps every decoding error of this package.
	ErrMalformed = errors.New("rtc: malformed event")
	// ErrNoRooms: every room is encrypted (left to classic calls) or none
	// is known, so MatrixRTC has nothing to ring.
	ErrNoRooms = errors.New("matrixrtc: no unencrypted room to ring")
	// errSFUClosed is the loss of an SFU connection that gave no reason.
	errSFUClosed = errors.New("SFU connection closed")
)
