// Package h264nal is H.264's emulation prevention (ITU-T H.264 section
// 7.4.1): the escaping that keeps a NAL unit's payload free of anything a
// byte-stream reader would take for a start code, and its undoing. It is
// pure Go with no dependency beyond the standard library, so both the
// codec glue (media/codec, cgo) and frame encryption (media/framecrypt,
// no cgo) can share one implementation.
package h264nal

import "bytes"

var (
	zeroZero  = []byte{0, 0}
	escapeSeq = []byte{0, 0, 3}
)

// AppendEscaped appends rbsp to dst with an emulation prevention byte (03)
// before every byte ≤ 03 that follows two zeros, so that no 00 00 00,
// 00 00 01, 00 00 02 or 00 00 03 appears in the output. Zeros are counted
// afresh after each inserted 03, as section 7.4.1 and livekit-client's
// writeRbsp (utils.ts) both do.
func AppendEscaped(dst, rbsp []byte) []byte {
	zeros := 0
	for i := 0; i < len(rbsp); i++ {
		if zeros == 0 {
			// Nothing needs a 03 before the next 00 00, and the byte
			// before that pair is not 0, so zeros is still 0 there:
			// copy up to it in bulk.
			j := bytes.Index(rbsp[i:], zeroZero)
			if j < 0 {
				return append(dst, rbsp[i:]...)
			}
			dst = append(dst, rbsp[i:i+j]...)
			i += j
		}
		c := rbsp[i]
		if zeros >= 2 && c <= 3 {
			dst = append(dst, 3)
			zeros = 0
		}
		dst = append(dst, c)
		if c == 0 {
			zeros++
		} else {
			zeros = 0
		}
	}
	return dst
}

// AppendUnescaped appends payload to dst without the 03 of each 00 00 03,
// scanning left to right and resuming after each dropped 03 (so
// 00 00 03 00 00 03 loses both). This is section 7.4.1's reading and
// livekit-client's parseRbsp (utils.ts).
func AppendUnescaped(dst, payload []byte) []byte {
	for {
		j := bytes.Index(payload, escapeSeq)
		if j < 0 {
			return append(dst, payload...)
		}
		dst = append(dst, payload[:j+2]...)
		payload = payload[j+3:]
	}
}

// Unescaped is payload without its emulation prevention bytes. Most NAL
// units have none: then payload itself comes back, not copied, so the
// result must be treated as read-only.
func Unescaped(payload []byte) []byte {
	if !bytes.Contains(payload, escapeSeq) {
		return payload
	}
	return AppendUnescaped(make([]byte, 0, len(payload)), payload)
}
