package framecrypt

import "errors"

var (
	// ErrKeyLength is returned by SetKey for raw key material shorter than
	// MinKeyLength bytes.
	ErrKeyLength = errors.New("framecrypt: raw key too short")
	// ErrNoKey is returned when no key is set at the index asked for: the
	// ring's current index when encrypting, the frame's key index when
	// decrypting (livekit-client reports the latter as MissingKey).
	ErrNoKey = errors.New("framecrypt: no key at index")
	// ErrShortFrame is returned for a frame too short to hold what its codec
	// leaves in the clear, or, when decrypting, the clear bytes, the GCM tag
	// and the trailer.
	ErrShortFrame = errors.New("framecrypt: frame too short")
	// ErrMalformed is returned for a frame whose trailer cannot be right
	// (an IV length of zero).
	ErrMalformed = errors.New("framecrypt: malformed frame")
	// ErrAuth is returned when AES-GCM refuses the frame: wrong key, or
	// ciphertext, clear header or trailer altered on the way.
	ErrAuth = errors.New("framecrypt: frame authentication failed")
	// ErrNoSlice is returned when encrypting an H.264 access unit in which
	// no coded slice can be found, or one whose clear part a receiver could
	// not find again (see Encrypt).
	ErrNoSlice = errors.New("framecrypt: no H.264 slice in frame")
	// ErrUnknownSIF is returned for a frame that carries the server's
	// injected-frame trailer but none of the payloads the server injects.
	ErrUnknownSIF = errors.New("framecrypt: unexpected server-injected frame")
	// ErrCodec is returned for a MIME type this package cannot encrypt.
	ErrCodec = errors.New("framecrypt: unsupported codec")
)
