package framecrypt

import (
	"bytes"
	"crypto/cipher"
	"crypto/sha256"
	"encoding/hex"
	"fmt"

	"github.com/doorbell/intercom/media/h264nal"
)

// Decryptor decrypts the frames of one remote participant's track with the
// keys of that participant's ring, whichever index each frame names.
//
// A Decryptor is not safe for concurrent use; it belongs to the goroutine
// that reads its track.
type Decryptor struct {
	ring    *KeyRing
	codec   Codec
	sif     []byte
	out     []byte // returned by Decrypt, reused by the next call
	scratch []byte // H.264: the encrypted part after unescaping
}

// NewDecryptor returns a Decryptor for frames of codec c under ring r.
func NewDecryptor(r *KeyRing, c Codec) *Decryptor {
	return &Decryptor{ring: r, codec: c}
}

// SetSIFTrailer sets the trailer the LiveKit server appends to frames it
// injects itself (JoinResponse.sif_trailer): such frames are not
// encrypted. Call it before the first Decrypt.
func (d *Decryptor) SetSIFTrailer(trailer []byte) {
	d.sif = bytes.Clone(trailer)
}

// Decrypt returns the frame as its sender encoded it, from a frame
// encrypted by livekit-client's FrameCryptor or by an Encryptor
// (decodeFunction and decryptFrame in FrameCryptor.ts, 2.23.0): the key
// index is the last byte, the byte before it the IV length, the IV before
// that; the clear bytes are found as the sender found them and are the
// additional data. An H.264 frame comes back with the clear header as
// received (4-byte start codes).
//
// As livekit-client does, an empty frame is returned as is, and a frame
// ending in the server's injected-frame trailer (SetSIFTrailer) is
// returned without it when it is one of the payloads the server injects.
//
// Unlike livekit-client, a frame that fails is not retried with ratcheted
// keys: Element Call and matrix-js-sdk 43 never ratchet, they send a new
// key at a new index, and each retry would let any forged frame cost ten
// key derivations. Failures are not counted either; the caller decides
// what to do with a participant whose frames keep failing.
//
// The returned slice is the Decryptor's own buffer, valid until the next
// call (except for the empty and server-injected frames, which are
// sub-slices of frame). frame is not modified, and must not be a slice of
// that buffer.
func (d *Decryptor) Decrypt(frame []byte) ([]byte, error) {
	if len(frame) == 0 {
		return frame, nil
	}
	if len(d.sif) > 0 && bytes.HasSuffix(frame, d.sif) {
		payload := frame[:len(frame)-len(d.sif)]
		if !serverInjected(payload) {
			return nil, fmt.Errorf("decrypt %d-byte frame: %w", len(frame), ErrUnknownSIF)
		}
		return payload, nil
	}
	index := frame[len(frame)-1]
	ks := d.ring.key(index)
	if ks == nil {
		return nil, fmt.Errorf("decrypt frame with key %d: %w", index, ErrNoKey)
	}
	switch d.codec {
	case Opus:
		return d.open(ks, frame, clearAudio, false)
	case VP8:
		return d.open(ks, frame, vp8Clear(vp8KeyFrame(frame)), false)
	case H264:
		if clear, _, ok := h264Clear(frame); ok {
			return d.open(ks, frame, clear, true)
		}
		// livekit-client's fallback to the VP8 rule, keyed by the
		// receiver's frame type, which is not known here: GCM tells which
		// count the sender used.
		if out, err := d.open(ks, frame, clearVP8Key, false); err == nil {
			return out, nil
		}
		return d.open(ks, frame, clearVP8Delta, false)
	}
	return nil, fmt.Errorf("decrypt: %v: %w", d.codec, ErrCodec)
}

// open checks the trailer and opens the ciphertext behind clear bytes.
func (d *Decryptor) open(ks *keySet, frame []byte, clear int, nalu bool) ([]byte, error) {
	if len(frame) < clear {
		return nil, fmt.Errorf("decrypt %d-byte %v frame (%d clear bytes): %w", len(frame), d.codec, clear, ErrShortFrame)
	}
	header, body := frame[:clear], frame[clear:]
	if nalu && needsRBSPUnescaping(body) {
		d.scratch = h264nal.AppendUnescaped(d.scratch[:0], body)
		body = d.scratch
	}
	if len(body) < trailerLength {
		return nil, fmt.Errorf("decrypt %d-byte %v frame: %w", len(frame), d.codec, ErrShortFrame)
	}
	n := int(body[len(body)-2])
	if n == 0 {
		return nil, fmt.Errorf("decrypt %v frame: IV length 0: %w", d.codec, ErrMalformed)
	}
	if len(body) < tagLength+n+trailerLength {
		return nil, fmt.Errorf("decrypt %d-byte %v frame (%d clear bytes, IV %d bytes): %w",
			len(frame), d.codec, clear, n, ErrShortFrame)
	}
	ivStart := len(body) - trailerLength - n
	iv, ciphertext := body[ivStart:len(body)-trailerLength], body[:ivStart]
	aead := ks.aead
	if n != ivLength {
		// livekit-client reads the IV length from the frame; releases
		// before IV_LENGTH became 12 sent 16.
		var err error
		if aead, err = cipher.NewGCMWithNonceSize(ks.block, n); err != nil {
			return nil, fmt.Errorf("decrypt %v frame: IV length %d: %w", d.codec, n, ErrMalformed)
		}
	}
	out, err := aead.Open(append(d.out[:0], header...), iv, ciphertext, header)
	if err != nil {
		return nil, fmt.Errorf("decrypt %d-byte %v frame with key %d: %w", len(frame), d.codec, frame[len(frame)-1], ErrAuth)
	}
	d.out = out
	return out, nil
}

// sifPayloadHashes are the SHA-256 hashes of the frames the LiveKit server
// injects unencrypted (a VP8 8x8 key frame, an H.264 2x2 SPS, PPS and IDR
// slice, an Opus silence frame), as livekit-client compares them
// (src/e2ee/worker/sifPayload.ts CryptoHashes, 2.23.0).
var sifPayloadHashes = func() [][sha256.Size]byte {
	var out [][sha256.Size]byte
	for _, h := range []string{
		"ef0161653d8b2b23aad46624b420af1d03ce48950e9fc85718028f91b50f9219",
		"f0a0e09647d891d6d50aa898bce7108090375d0d55e50a2bb21147afee558e44",
		"61d9665eed71b6d424ae9539330a3bdd5cb386d4d781c808219a6e36750493a7",
		"faffc26b68a2fc09096fa20f3351e706398b6f838a7500c8063472c2e476e90d",
		"aad8d31fc56b2802ca500e58c2fb9d0b29ad71bb7cb52cd6530251eade188988",
	} {
		var b [sha256.Size]byte
		if _, err := hex.Decode(b[:], []byte(h)); err != nil {
			panic(err) // a typo above; caught by every test run
		}
		out = append(out, b)
	}
	return out
}()

func serverInjected(payload []byte) bool {
	sum := sha256.Sum256(payload)
	for _, h := range sifPayloadHashes {
		if sum == h {
			return true
		}
	}
	return false
}
