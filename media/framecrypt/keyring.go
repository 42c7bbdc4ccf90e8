package framecrypt

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"sync/atomic"
)

// MinKeyLength is the shortest raw key SetKey takes. Element Call sends 16
// random bytes (matrix-js-sdk RTCEncryptionManager), the Famedly SDK and
// MSC4143 32. livekit-client itself would import any length as HKDF
// material; a shorter key here can only be a bug, so it is refused.
const MinKeyLength = 16

// ratchetSalt is livekit-client's default ratchetSalt (src/e2ee/constants.ts,
// SALT, 2.23.0), used as the HKDF salt. Element Call's MatrixKeyProvider
// (src/e2ee/matrixKeyProvider.ts) keeps the default: it only sets
// ratchetWindowSize 10 and keyringSize 256.
const ratchetSalt = "LKFrameEncryptionKey"

// hkdfInfo is the HKDF info livekit-client passes (src/e2ee/utils.ts,
// getAlgoOptions: `info: new ArrayBuffer(128)`): 128 zero bytes.
var hkdfInfo = string(make([]byte, 128))

// aesKeyLength is KEY_PROVIDER_DEFAULTS.keySize (128 bits) in bytes: the
// derived key is AES-128.
const aesKeyLength = 16

// keySet is one derived key, immutable once built. The AEAD keeps no
// per-call state (the standard library's AES-GCM only reads its key
// schedule in Seal and Open), so one keySet serves concurrent callers.
type keySet struct {
	block cipher.Block // for the rare frame whose IV is not 12 bytes
	aead  cipher.AEAD  // 12-byte nonce, 16-byte tag: WebCrypto's AES-GCM defaults
}

// deriveKey turns raw key material into the frame key as livekit-client
// does for a key provider that imports its keys as HKDF material (Element
// Call's MatrixKeyProvider: importKey("raw", key, "HKDF")): utils.ts
// deriveKeys → crypto.subtle.deriveKey({name: "HKDF", hash: "SHA-256",
// salt: ratchetSalt, info: 128 zero bytes}, material, {name: "AES-GCM",
// length: 128}), that is HKDF-SHA256 (RFC 5869) extract and expand to 16
// bytes.
func deriveKey(raw []byte) (*keySet, error) {
	if len(raw) < MinKeyLength {
		return nil, fmt.Errorf("derive frame key from %d bytes: %w", len(raw), ErrKeyLength)
	}
	key, err := hkdf.Key(sha256.New, raw, []byte(ratchetSalt), hkdfInfo, aesKeyLength)
	if err != nil {
		return nil, fmt.Errorf("derive frame key: %w", err)
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, fmt.Errorf("derive frame key: %w", err)
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, fmt.Errorf("derive frame key: %w", err)
	}
	return &keySet{block: block, aead: aead}, nil
}

// KeyRing holds one participant's frame keys by key index (0–255, the
// index carried in every frame's trailer) and, on the sending side, the
// index new frames are encrypted with. Element Call's MatrixKeyProvider
// uses keyringSize 256, so an index is never folded onto another slot, as
// livekit-client's ParticipantKeyHandler does for smaller rings.
//
// A KeyRing is safe for concurrent use: the track writers encrypt while
// the Matrix sync loop sets keys delivered by to-device messages.
type KeyRing struct {
	keys [256]atomic.Pointer[keySet]
	// current is the sending index plus one; zero means not set yet.
	current atomic.Uint32

	// The IV of every frame this ring encrypts is ivSalt XOR ivCounter,
	// big-endian in the last 8 bytes (see nextIV).
	ivSalt    [ivLength]byte
	ivCounter atomic.Uint64
}

// NewKeyRing returns an empty ring.
func NewKeyRing() *KeyRing {
	r := &KeyRing{}
	// crypto/rand.Read never fails (Go ≥ 1.24 crashes the program instead).
	_, _ = rand.Read(r.ivSalt[:])
	return r
}

// SetKey derives the frame key from raw key material (an
// io.element.call.encryption_keys key, base64-decoded) and stores it at
// index, replacing what was there. It does not change the sending index:
// Element Call's senders switch to a new key only after a delay (matrix-js-sdk
// RTCEncryptionManager, useKeyDelay), so that is SetCurrent's job.
func (r *KeyRing) SetKey(index uint8, raw []byte) error {
	ks, err := deriveKey(raw)
	if err != nil {
		return fmt.Errorf("set key %d: %w", index, err)
	}
	r.keys[index].Store(ks)
	return nil
}

// SetCurrent makes index the key new frames are encrypted with. The key must
// already be set.
func (r *KeyRing) SetCurrent(index uint8) error {
	if r.keys[index].Load() == nil {
		return fmt.Errorf("use key %d for sending: %w", index, ErrNoKey)
	}
	r.current.Store(uint32(index) + 1)
	return nil
}

// Current returns the sending index, and false before SetCurrent.
func (r *KeyRing) Current() (uint8, bool) {
	c := r.current.Load()
	if c == 0 {
		return 0, false
	}
	return uint8(c - 1), true
}

// sending returns the current index and its key.
func (r *KeyRing) sending() (uint8, *keySet, error) {
	index, ok := r.Current()
	if !ok {
		return 0, nil, fmt.Errorf("encrypt: no sending key chosen: %w", ErrNoKey)
	}
	return index, r.keys[index].Load(), nil
}

// key returns the key at index, or nil.
func (r *KeyRing) key(index uint8) *keySet { return r.keys[index].Load() }

// nextIV writes the next IV into iv (ivLength bytes).
//
// AES-GCM is broken by one repeated IV under a key, so this IV cannot
// repeat: it is a counter shared by every Encryptor of the ring and only
// ever incremented (2^64 frames: at 80 frames a second, longer than the sun
// will shine), XORed with a salt drawn when the ring is made. XOR with a
// constant is a bijection, so no two frames this ring encrypts get the same
// IV whatever key they use; the random salt means a ring made anew (a
// restart) that were given a key it used before would also have to draw
// the same 96 bits to repeat an IV, and it keeps the IV's bytes random, so
// H.264's escaping (h264.go) rarely has to touch them, where a bare counter's
// leading zeros would need it on every frame.
//
// livekit-client builds its IV from SSRC, RTP timestamp and a send counter
// (FrameCryptor.ts, makeIV); receivers never rebuild it, they read it from
// the trailer, so any construction is compatible.
func (r *KeyRing) nextIV(iv []byte) {
	binary.BigEndian.PutUint64(iv[4:ivLength], r.ivCounter.Add(1))
	copy(iv[:4], r.ivSalt[:4])
	for i := 4; i < ivLength; i++ {
		iv[i] ^= r.ivSalt[i]
	}
}
