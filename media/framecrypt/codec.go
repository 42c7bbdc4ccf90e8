package framecrypt

import (
	"fmt"
	"strings"
)

// Codec says how a frame is laid out, which decides the bytes left in the
// clear (header.go).
type Codec int

const (
	// Opus frames are RTP payloads; the TOC byte stays clear.
	Opus Codec = iota + 1
	// VP8 frames are whole VP8 frames (RFC 6386), without the RTP payload
	// descriptor.
	VP8
	// H264 frames are Annex-B access units, as pion's
	// TrackLocalStaticSample takes them.
	H264
)

func (c Codec) String() string {
	switch c {
	case Opus:
		return "opus"
	case VP8:
		return "vp8"
	case H264:
		return "h264"
	}
	return fmt.Sprintf("codec(%d)", int(c))
}

// CodecFromMIME maps a WebRTC MIME type ("audio/opus", "video/VP8",
// "video/H264", any case) to its Codec.
func CodecFromMIME(mime string) (Codec, error) {
	switch strings.ToLower(mime) {
	case "audio/opus":
		return Opus, nil
	case "video/vp8":
		return VP8, nil
	case "video/h264":
		return H264, nil
	}
	return 0, fmt.Errorf("codec %q: %w", mime, ErrCodec)
}
