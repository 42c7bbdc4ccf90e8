package media

import "errors"

var (
	// ErrClosed is returned by a Stream that has been closed.
	ErrClosed = errors.New("media: stream closed")
	// ErrNoEncoder is returned when a codec has no encoder configured.
	ErrNoEncoder = errors.New("media: no encoder for codec")
	// ErrBadFormat is returned for an unusable video or audio format.
	ErrBadFormat = errors.New("media: unsupported format")
	// ErrNoPicture is returned by Snapshot when the camera passes H.264
	// through and the stream has no H.264 decoder (Encoders.DecodeH264).
	ErrNoPicture = errors.New("media: no decoded picture (camera passes H.264 through)")
	// ErrNoGlassCode is returned by ReadGlassCode for a picture that holds
	// no readable glass code.
	ErrNoGlassCode = errors.New("media: no glass code in the picture")
	// ErrGlassCodeChecksum is returned by ReadGlassCode when the cells read
	// but their CRC does not match: a misread, not a time.
	ErrGlassCodeChecksum = errors.New("media: glass code checksum mismatch")
)
