package framecrypt

// Bytes livekit-client leaves in the clear at the start of a frame
// (src/e2ee/constants.ts UNENCRYPTED_BYTES and FrameCryptor.ts
// getUnencryptedBytes, 2.23.0): the VP8 payload header, 10 bytes on key
// frames and 3 on delta frames (RFC 6386 section 9.1), and the Opus TOC
// byte (RFC 6716 section 3.1). H.264 is parsed (h264.go).
const (
	clearVP8Key   = 10
	clearVP8Delta = 3
	clearAudio    = 1
)

// vp8KeyFrame reports whether a VP8 frame is a key frame: the first bit of
// the frame tag, P, is 0 on key frames (RFC 6386 section 9.1). A WebRTC
// sender's encoder and a receiver's depacketizer both call such a frame
// "key", which is the frame.type livekit-client reads.
func vp8KeyFrame(frame []byte) bool { return len(frame) > 0 && frame[0]&1 == 0 }

// vp8Clear is the clear byte count of a VP8 frame (or of an H.264 frame
// livekit-client could not parse, which it treats the same way).
func vp8Clear(key bool) int {
	if key {
		return clearVP8Key
	}
	return clearVP8Delta
}
