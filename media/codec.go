package media

// Codec names an RTP codec by its MIME type, exactly as pion spells it.
type Codec string

const (
	// H264 is H.264 constrained baseline, profile-level-id 42e01f,
	// packetization-mode 1 (RFC 6184).
	H264 Codec = "video/H264"
	// VP8 is VP8 (RFC 7741).
	VP8 Codec = "video/VP8"
	// Opus is Opus at 48 kHz (RFC 7587).
	Opus Codec = "audio/opus"
)

// H264FMTP is the fmtp line offered for H.264: constrained baseline level
// 3.1, non-interleaved mode (RFC 6184 §8.1).
const H264FMTP = "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f"

// OpusFMTP is the fmtp line offered for Opus (RFC 7587 §6.1).
const OpusFMTP = "minptime=10;useinbandfec=1"

// IsVideo reports whether c is a video codec.
func (c Codec) IsVideo() bool { return c == H264 || c == VP8 }

// IsKeyFrame reports whether an encoded access unit of codec c can be
// decoded on its own: an H.264 Annex B access unit holding an IDR slice
// (RFC 6184 §1.3, NAL unit type 5), or a VP8 frame whose P bit is clear
// (RFC 6386 §9.1). Audio frames always are.
func IsKeyFrame(c Codec, data []byte) bool {
	switch c {
	case H264:
		return h264HasIDR(data)
	case VP8:
		return len(data) > 0 && data[0]&0x01 == 0
	case Opus:
		return true
	}
	return false
}

// h264HasIDR scans Annex B start codes for an IDR slice.
func h264HasIDR(b []byte) bool {
	for i := 0; i+3 < len(b); i++ {
		if b[i] == 0 && b[i+1] == 0 && b[i+2] == 1 {
			if b[i+3]&0x1f == 5 {
				return true
			}
			i += 2
		}
	}
	return false
}
