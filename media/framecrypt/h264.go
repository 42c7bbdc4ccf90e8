package framecrypt

import "bytes"

// H.264 in livekit-client 2.23.0 (src/e2ee/worker/naluUtils.ts and
// FrameCryptor.ts): everything up to and including the first byte after the
// NAL header of the first coded slice stays clear, so the SFU and the
// receiver's depacketizer still see the parameter sets and the slice type;
// the rest is encrypted, and the encrypted part (ciphertext, IV and trailer)
// is escaped as RBSP (emulation prevention, ITU-T H.264 section 7.4.1) so
// that it holds no start code the RTP packetizer would cut at; the escaping
// and unescaping themselves are media/h264nal's, which follows the same
// rules as livekit-client's writeRbsp and parseRbsp.
//
// The functions below reproduce livekit-client's parsing, edge cases
// included, because the receiver finds the clear part by parsing the frame
// it got: both ends must count the same bytes. The differential test
// against livekit-client's own functions (compat_test.go) checks this.

var (
	startCode3 = []byte{0, 0, 1}
	escapeSeq  = []byte{0, 0, 3}
)

// nextStartCode finds the first start code livekit-client's findNALUIndices
// would stop at from pos: 00 00 00 01 when it starts before len-4, else
// 00 00 01 starting before len-3. It returns the start code's position and
// length, or -1.
func nextStartCode(b []byte, pos int) (at, length int) {
	n := len(b)
	if pos >= n-3 {
		return -1, 0
	}
	// A 3-byte code at q < n-3 lies within b[:n-1]. The scan goes byte by
	// byte, so a 4-byte code at q-1 (q-1 ≥ pos) is met before it; no code
	// can start earlier, as it would contain an earlier 00 00 01.
	q := bytes.Index(b[pos:n-1], startCode3)
	if q < 0 {
		return -1, 0
	}
	q += pos
	if q-1 >= pos && b[q-1] == 0 {
		return q - 1, 4
	}
	return q, 3
}

// h264SliceType reports a coded slice NAL unit, non-IDR (1) or IDR (5)
// (naluUtils.ts isH264SliceNALU).
func h264SliceType(nalHeader byte) bool {
	t := nalHeader & 0x1f
	return t == 1 || t == 5
}

// h265SliceType reports the NAL unit types naluUtils.ts isH265SliceNALU
// counts as H.265 slices (0–9 and 16–21). livekit-client looks for them in
// H.264 tracks too, when no H.264 slice is found.
func h265SliceType(firstByte byte) bool {
	t := (firstByte >> 1) & 0x3f
	return t <= 9 || (t >= 16 && t <= 21)
}

// h264Clear returns the number of clear bytes livekit-client gives an H.264
// frame (naluUtils.ts processNALUsForEncryption with knownCodec "h264"):
// the offset of the first H.264 slice NAL unit plus 2, or, when the frame
// has none, of the first NAL unit that reads as an H.265 slice (h264 is
// then false). ok is false where livekit-client throws and falls back to
// the VP8 rule (vp8Clear): bytes other than zeros before the first start
// code, or no slice at all.
//
// As in findNALUIndices, a NAL unit starting in the last 3 bytes is not
// counted.
func h264Clear(b []byte) (clear int, h264, ok bool) {
	at, length := nextStartCode(b, 0)
	lead := len(b)
	if at >= 0 {
		lead = at
	}
	for _, c := range b[:lead] {
		if c != 0 {
			return 0, false, false // "byte stream contains leading data"
		}
	}
	h265 := -1
	for at >= 0 {
		p := at + length
		if p >= len(b)-3 {
			break
		}
		if h264SliceType(b[p]) {
			return p + 2, true, true
		}
		if h265 < 0 && h265SliceType(b[p]) {
			h265 = p
		}
		at, length = nextStartCode(b, p)
	}
	if h265 >= 0 {
		return h265 + 2, false, true
	}
	return 0, false, false
}

// appendSentHeader appends the clear header of an H.264 frame whose first
// slice's NAL unit starts at slice, in the form the receiver will get it,
// because the header is the GCM additional data and the receiver
// authenticates what it got. The door's frames go out through pion's
// H.264 packetizer (pion/rtp codecs.H264Payloader), which splits the
// access unit at its start codes and leaves out access unit delimiters
// and filler data; every depacketizer (WebRTC's, pion's) rebuilds each NAL
// unit behind a 4-byte start code. So: the NAL units before the slice, as
// pion splits them, each behind 00 00 00 01, AUD (9), filler (12) and
// empty ones left out; then 00 00 00 01 and the slice's first two bytes.
//
// livekit-client's sender does the start-code half of this
// (naluUtils.ts normalizeAnnexBStartCodes: 3-byte start codes made 4-byte)
// for the same reason; its browser's packetizer is not pion's.
// pion also reorders a PPS sent before its SPS (it packs them into one
// STAP-A, SPS first); encoders write the SPS first.
func appendSentHeader(dst, frame []byte, slice int) []byte {
	region := frame[:slice] // ends with the slice's start code
	start, offset := bytes.Index(region, startCode3), 3
	for start >= 0 && start+offset < len(region) {
		next := len(region)
		if end := bytes.Index(region[start+offset:], startCode3); end >= 0 {
			next = start + offset + end
		}
		long := next < len(region) && region[next-1] == 0
		if long {
			next--
		}
		if nal := region[start+offset : next]; len(nal) > 0 && nal[0]&0x1f != 9 && nal[0]&0x1f != 12 {
			dst = append(dst, 0, 0, 0, 1)
			dst = append(dst, nal...)
		}
		start, offset = next, 3
		if long {
			offset = 4
		}
	}
	return append(dst, 0, 0, 0, 1, frame[slice], frame[slice+1])
}

// needsRBSPUnescaping reports a 00 00 03 starting before len-3
// (livekit-client utils.ts needsRbspUnescaping). It stays here, not in
// media/h264nal, because it is livekit-client's test rather than the
// standard's: a 00 00 03 that ends the buffer does not count, so a
// payload whose only 00 00 03 is its last three bytes is decrypted as it
// is, which is what livekit-client's own decryptor does.
func needsRBSPUnescaping(b []byte) bool {
	return len(b) > 3 && bytes.Index(b[:len(b)-1], escapeSeq) >= 0
}
