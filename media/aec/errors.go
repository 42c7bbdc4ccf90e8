package aec

import "errors"

var (
	// ErrFrameSize is returned for a frame that is not a whole number of
	// 10 ms frames at media.SampleRate (480 samples).
	ErrFrameSize = errors.New("aec: frame is not a multiple of 10 ms")
	// ErrClosed is returned by a Processor after Close.
	ErrClosed = errors.New("aec: processor closed")
	// ErrLibrary is returned for a Library this package does not know.
	ErrLibrary = errors.New("aec: unknown library")
)
