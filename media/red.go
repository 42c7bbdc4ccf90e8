package media

import (
	"errors"
	"fmt"
)

// ErrRED reports a malformed RFC 2198 (RED) payload.
var ErrRED = errors.New("media: malformed RED payload")

// maxREDBlocks bounds the redundant blocks read from one packet: browsers
// send one or two; more is a hostile packet, not audio.
const maxREDBlocks = 16

// PrimaryFromRED returns the primary encoding of an RFC 2198 redundant
// audio payload: browsers publish their microphone to LiveKit as
// "audio/red" wrapping Opus, and the SFU forwards it so to subscribers
// that negotiated RED. Each redundant block has a 4-byte header (F=1,
// payload type, timestamp offset, 10-bit length); the last header is one
// byte (F=0, the primary's payload type), and the primary block is what
// follows the redundant blocks. The returned slice aliases payload.
func PrimaryFromRED(payload []byte) (primary []byte, pt uint8, err error) {
	i, skip := 0, 0
	for blocks := 0; ; blocks++ {
		if i >= len(payload) {
			return nil, 0, fmt.Errorf("%w: headers run past the payload", ErrRED)
		}
		if payload[i]&0x80 == 0 { // F=0: the primary's one-byte header
			pt = payload[i] & 0x7f
			i++
			break
		}
		if blocks == maxREDBlocks {
			return nil, 0, fmt.Errorf("%w: more than %d redundant blocks", ErrRED, maxREDBlocks)
		}
		if i+4 > len(payload) {
			return nil, 0, fmt.Errorf("%w: truncated block header", ErrRED)
		}
		skip += int(payload[i+2]&0x03)<<8 | int(payload[i+3])
		i += 4
	}
	if i+skip > len(payload) {
		return nil, 0, fmt.Errorf("%w: redundant blocks longer than the payload", ErrRED)
	}
	return payload[i+skip:], pt, nil
}
