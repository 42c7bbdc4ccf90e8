package rtc

import "errors"

var (
	// ErrMalformed wraps every decoding error of this package.
	ErrMalformed = errors.New("rtc: malformed event")
	// ErrNoRooms: no room is known, or every one is encrypted and left to
	// classic calls (RunnerConfig.MediaEncryption off), so MatrixRTC has
	// nothing to ring.
	ErrNoRooms = errors.New("matrixrtc: no room to ring")
	// errSFUClosed is the loss of an SFU connection that gave no reason.
	errSFUClosed = errors.New("SFU connection closed")
)
