package framecrypt

import (
	"bytes"
	"testing"
)

// FuzzDecrypt feeds arbitrary frames, as a remote participant or the SFU
// could send them, to the Decryptor of every codec: it must never panic,
// and a successful decryption must not come from bytes that were never
// encrypted by a key holder. The same bytes taken as a frame to send must
// round-trip, and any one byte altered in the encrypted frame must fail.
func FuzzDecrypt(f *testing.F) {
	seedRing := ringWith(f, 0, 1)
	for i, fr := range []struct {
		c     Codec
		frame []byte
	}{
		{Opus, opusFrame(60, 1)}, {VP8, vp8Frame(true, 40, 2)}, {VP8, vp8Frame(false, 20, 3)},
		{H264, h264Key(200, 4)}, {H264, h264Delta(60, 5)},
	} {
		enc, err := NewEncryptor(seedRing, fr.c).Encrypt(fr.frame)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(bytes.Clone(enc), uint8(fr.c-1), uint16(i))
		f.Add(fr.frame, uint8(fr.c-1), uint16(i))
	}
	f.Add([]byte{}, uint8(0), uint16(0))
	f.Add([]byte{0, 0, 0, 1, 0x65, 0, 0, 3, 12, 1}, uint8(2), uint16(3))

	f.Fuzz(func(t *testing.T, data []byte, codecSel uint8, flip uint16) {
		c := Codec(codecSel%3 + 1)
		ring := ringWith(t, 0, 1)
		dec := NewDecryptor(ring, c)
		// Arbitrary bytes: an error or a frame, never a panic. A forgery
		// would need the key, so only inputs that came from an Encryptor
		// of this key (the seeds) may succeed.
		_, _ = dec.Decrypt(data)

		orig := bytes.Clone(data)
		enc, err := NewEncryptor(ring, c).Encrypt(data)
		if err != nil {
			return // no slice, too short: refused, not encrypted
		}
		if !bytes.Equal(data, orig) {
			t.Fatal("Encrypt modified its input")
		}
		if len(data) == 0 {
			return
		}
		enc = bytes.Clone(enc)
		got, err := dec.Decrypt(enc)
		if err != nil {
			t.Fatalf("round trip of %x: %v", data, err)
		}
		if want := normalized(c, data); !bytes.Equal(got, want) {
			t.Fatalf("round trip of %x gave %x, want %x", data, got, want)
		}
		tampered := bytes.Clone(enc)
		tampered[int(flip)%len(tampered)] ^= byte(flip>>8) | 1
		if out, err := dec.Decrypt(tampered); err == nil {
			t.Fatalf("altered frame %x (from %x) decrypted to %x", tampered, enc, out)
		}
	})
}
