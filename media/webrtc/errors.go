package webrtc

import "errors"

var (
	// ErrClosed is returned by a Peer that has been closed.
	ErrClosed = errors.New("webrtc: peer closed")
	// ErrAnswered is returned when a second answer is applied.
	ErrAnswered = errors.New("webrtc: answer already applied")
)
