// Package framecrypt is LiveKit's end-to-end frame encryption, byte for
// byte as livekit-client 2.23.0 does it (the E2EE worker Element Call runs
// in encrypted rooms): each encoded media frame is encrypted once by its
// sender, the SFU forwards the same bytes to every subscriber, and only
// holders of the sender's key, shared over Olm to-device
// io.element.call.encryption_keys, can read it.
//
// Sources, all livekit-client 2.23.0 unless said: src/e2ee/constants.ts,
// src/e2ee/utils.ts (deriveKeys, writeRbsp, parseRbsp),
// src/e2ee/worker/FrameCryptor.ts (encodeFunction, decodeFunction,
// decryptFrame, getUnencryptedBytes, makeIV), src/e2ee/worker/naluUtils.ts,
// src/e2ee/worker/sifPayload.ts, src/e2ee/worker/ParticipantKeyHandler.ts;
// Element Call's src/e2ee/matrixKeyProvider.ts (main, August 2026).
//
// # Keys
//
// Element Call imports each raw key it receives (16 random bytes) as HKDF
// key material for that participant at the message's key index, with
// livekit-client's defaults except ratchetWindowSize 10 and keyringSize
// 256. The frame key is HKDF-SHA256 (RFC 5869) of the raw key with salt
// "LKFrameEncryptionKey" and 128 zero bytes of info, 16 bytes long: an
// AES-128-GCM key. A KeyRing holds one participant's keys by index 0–255.
//
// # Frame
//
//	+--------------+---------------------------+------------+-------+-----------+
//	| clear header | AES-GCM ciphertext + tag  | IV (12 B)  | IVlen | key index |
//	+--------------+---------------------------+------------+-------+-----------+
//	                <- H.264: RBSP-escaped from here to the end ------------------>
//
// The clear header is authenticated as GCM additional data. Its length
// depends on the codec: Opus 1 byte (the TOC byte); VP8 10 bytes on key
// frames and 3 on delta frames; H.264 everything up to and including the
// first byte after the NAL header of the first coded slice (type 1 or 5),
// sent in the form the receiver's depacketizer rebuilds: 4-byte start
// codes, and without the access unit delimiters and filler data that
// pion's packetizer drops. The H.264 part after the header is
// escaped as RBSP (an 03 before any byte ≤ 03 that follows two zeros) so
// that it contains no start code. The tag is 16 bytes, the IV length byte
// is 12 and the key index is the sender's current index. Empty frames
// pass unencrypted.
//
// The receiver reads the key index from the last byte, finds the header as
// the sender did (for H.264 by parsing the frame, which is why the parsing
// here reproduces livekit-client's exactly), unescapes, and reads the IV
// length and IV from the trailer, so the IV itself is the sender's choice:
// here a per-ring counter under a random salt, which cannot repeat (see
// KeyRing.nextIV). Frames the LiveKit server injects unencrypted end in a
// trailer given at join (Decryptor.SetSIFTrailer).
//
// Not done, on purpose: ratcheting keys on failure (Element Call never
// ratchets, it sends a new key at a new index), failure counting, VP9,
// AV1, H.265, and livekit-client's optional packet trailer for frame
// metadata.
//
// An Encryptor per published track and a Decryptor per subscribed track
// each reuse one output buffer, so steady-state encryption allocates
// nothing; see their methods for who owns the bytes.
package framecrypt
