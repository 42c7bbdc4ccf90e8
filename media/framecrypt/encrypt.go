package framecrypt

import (
	"fmt"

	"github.com/doorbell/intercom/media/h264nal"
)

const (
	// ivLength is livekit-client's IV_LENGTH (src/e2ee/constants.ts): 12
	// bytes, AES-GCM's native nonce size.
	ivLength = 12
	// trailerLength is the IV length byte and the key index byte.
	trailerLength = 2
	// tagLength is WebCrypto's default AES-GCM tag, 128 bits, which
	// livekit-client does not change.
	tagLength = 16
	// Overhead is what encryption adds to a frame before H.264's RBSP
	// escaping: GCM tag, IV, IV length and key index.
	Overhead = tagLength + ivLength + trailerLength
)

// Encryptor encrypts the frames of one published track with the ring's
// current key. The SFU forwards the same bytes to every subscriber, so a
// track needs one Encryptor and one Encrypt call per frame whatever the
// number of subscribers.
//
// An Encryptor is not safe for concurrent use; it belongs to the goroutine
// that writes its track. Several Encryptors may share one KeyRing.
type Encryptor struct {
	ring    *KeyRing
	codec   Codec
	out     []byte // returned by Encrypt, reused by the next call
	scratch []byte // H.264: the encrypted part before escaping
	iv      [ivLength]byte
}

// NewEncryptor returns an Encryptor for frames of codec c under ring r.
func NewEncryptor(r *KeyRing, c Codec) *Encryptor {
	return &Encryptor{ring: r, codec: c}
}

// Encrypt returns frame encrypted as livekit-client's FrameCryptor
// (encodeFunction, 2.23.0) would: the codec's clear bytes, the AES-GCM
// ciphertext of the rest with the clear bytes as additional data, the IV,
// the IV length and the key index; for H.264 the part after the clear
// header is RBSP-escaped and the header is sent as the receiver will see
// it after pion's packetizer (appendSentHeader: 4-byte start codes, no
// access unit delimiter or filler data).
//
// The key frame flag livekit-client takes from the encoder is read from the
// frame itself (the VP8 frame tag's P bit), so the sender and every
// receiver agree on it.
//
// The returned slice is the Encryptor's own buffer: it is valid until the
// next call, so the caller hands it on (pion's WriteSample packetises and
// copies before it returns) and does not keep it. frame is not modified,
// and must not be a slice of that buffer.
// An empty frame (Opus DTX) is returned as is, unencrypted, as
// livekit-client does.
func (e *Encryptor) Encrypt(frame []byte) ([]byte, error) {
	if len(frame) == 0 {
		return frame, nil
	}
	switch e.codec {
	case Opus:
		return e.seal(frame, clearAudio)
	case VP8:
		return e.seal(frame, vp8Clear(vp8KeyFrame(frame)))
	case H264:
		// The receiver finds the clear part by parsing the frame it gets,
		// so frames it could misread are refused: an access unit without
		// an H.264 slice (livekit-client would fall back to the VP8 rule,
		// keyed by a frame type the receiver's depacketizer decides, or
		// take a NAL unit that reads as an H.265 slice), and one whose
		// slice data starts with 00 (first_mb_in_slice ≥ 255, never the
		// first slice of an access unit), where the escaped ciphertext may
		// complete a start code across the boundary. An encoder produces
		// neither.
		clear, h264, ok := h264Clear(frame)
		if !ok || !h264 {
			return nil, fmt.Errorf("encrypt %d-byte H.264 frame: %w", len(frame), ErrNoSlice)
		}
		if frame[clear-1] == 0 {
			return nil, fmt.Errorf("encrypt %d-byte H.264 frame: slice data starts with 00: %w", len(frame), ErrNoSlice)
		}
		return e.seal(frame, clear)
	default:
		return nil, fmt.Errorf("encrypt: %v: %w", e.codec, ErrCodec)
	}
}

// seal encrypts what follows the clear bytes.
func (e *Encryptor) seal(frame []byte, clear int) ([]byte, error) {
	if len(frame) < clear {
		return nil, fmt.Errorf("encrypt %d-byte %v frame (%d clear bytes): %w", len(frame), e.codec, clear, ErrShortFrame)
	}
	index, ks, err := e.ring.sending()
	if err != nil {
		return nil, err
	}
	iv := e.iv[:] // a field, not a local: passed to the AEAD, a local would escape
	e.ring.nextIV(iv)

	out := e.out[:0]
	if e.codec == H264 {
		out = appendSentHeader(out, frame, clear-2)
		sealed := ks.aead.Seal(e.scratch[:0], iv, frame[clear:], out)
		sealed = append(sealed, iv...)
		sealed = append(sealed, ivLength, index)
		e.scratch = sealed
		out = h264nal.AppendEscaped(out, sealed)
	} else {
		out = append(out, frame[:clear]...)
		out = ks.aead.Seal(out, iv, frame[clear:], out[:clear])
		out = append(out, iv...)
		out = append(out, ivLength, index)
	}
	e.out = out
	return out, nil
}
