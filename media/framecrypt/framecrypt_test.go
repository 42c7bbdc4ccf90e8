package framecrypt

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"sync"
	"testing"

	"github.com/doorbell/intercom/media/h264nal"
)

func TestRoundTrip(t *testing.T) {
	cases := []struct {
		name  string
		codec Codec
		frame []byte
		clear int // bytes left in the clear, as sent
	}{
		{"opus", Opus, opusFrame(100, 1), 1},
		{"opus TOC only", Opus, []byte{0xfc}, 1},
		{"vp8 key", VP8, vp8Frame(true, 3000, 2), 10},
		{"vp8 delta", VP8, vp8Frame(false, 500, 3), 3},
		{"vp8 delta of 3 bytes", VP8, vp8Frame(false, 3, 3), 3},
		// 4+23 SPS, 4+4 PPS, then the 3-byte start code becomes 4 bytes
		// (+1), the slice NAL header and one byte: 27+8+4+2.
		{"h264 key", H264, h264Key(30000, 4), 41},
		{"h264 delta", H264, h264Delta(5000, 5), 6},
		// The AUD is left out of the header, as pion's packetizer leaves
		// it out of the RTP packets.
		{"h264 delta with AUD and SEI", H264, accessUnit(nal{4, []byte{0x09, 0xf0}}, nal{4, []byte{0x06, 0x05, 0x01, 0xaa, 0x80}}, nal{3, sliceNAL(0x01, 800, 6)}), 9 + 4 + 2},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ring := ringWith(t, 7)
			orig := bytes.Clone(tc.frame)
			enc, err := NewEncryptor(ring, tc.codec).Encrypt(tc.frame)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(tc.frame, orig) {
				t.Fatal("Encrypt modified its input")
			}
			// The clear part is sent as is (H.264: start codes normalized).
			header := enc[:tc.clear]
			if tc.codec != H264 && !bytes.Equal(header, orig[:tc.clear]) {
				t.Fatalf("clear header %x, want %x", header, orig[:tc.clear])
			}
			if enc[len(enc)-1] != 7 || enc[len(enc)-2] != ivLength {
				t.Fatalf("trailer %x, want IV length 12 and key index 7", enc[len(enc)-2:])
			}
			if tc.codec != H264 && len(enc) != len(orig)+Overhead {
				t.Fatalf("encrypted length %d, want %d", len(enc), len(orig)+Overhead)
			}
			if bytes.Contains(enc[tc.clear:], []byte{0, 0, 1}) && tc.codec == H264 {
				t.Fatal("start code in the encrypted part of an H.264 frame")
			}
			got, err := NewDecryptor(ring, tc.codec).Decrypt(enc)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, normalized(tc.codec, orig)) {
				t.Fatalf("decrypted %d bytes differ from the %d-byte frame", len(got), len(orig))
			}
		})
	}
}

// normalized is what a receiver gets back: the frame, with H.264's clear
// header as sent (appendSentHeader).
func normalized(c Codec, frame []byte) []byte {
	if c != H264 {
		return frame
	}
	clear, _, ok := h264Clear(frame)
	if !ok {
		return nil
	}
	out := appendSentHeader(nil, frame, clear-2)
	return append(out, frame[clear:]...)
}

func TestH264EscapesCiphertext(t *testing.T) {
	want := escapeHeavyCiphertext()
	ring, frame := escapeHeavyH264(t, 0, testKey(0), want)
	out, err := NewEncryptor(ring, H264).Encrypt(frame)
	if err != nil {
		t.Fatal(err)
	}
	const clear = 6
	escaped := h264nal.AppendEscaped(nil, want)
	if !bytes.HasPrefix(out[clear:], escaped) {
		t.Fatal("the ciphertext is not the one the test built, or not escaped as expected")
	}
	if len(escaped) == len(want) {
		t.Fatal("nothing escaped: the test proves nothing")
	}
	for j := clear; j+2 < len(out); j++ {
		if out[j] == 0 && out[j+1] == 0 && out[j+2] < 3 {
			t.Fatalf("unescaped 00 00 %02x at %d", out[j+2], j)
		}
	}
	got, err := NewDecryptor(ring, H264).Decrypt(out)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, frame) {
		t.Fatal("round trip differs")
	}
	t.Logf("%d escapes in %d bytes of ciphertext", len(escaped)-len(want), len(want))
}

func TestDecryptErrors(t *testing.T) {
	ring := ringWith(t, 1)
	good, err := NewEncryptor(ring, Opus).Encrypt(opusFrame(60, 9))
	if err != nil {
		t.Fatal(err)
	}
	good = bytes.Clone(good)
	flip := func(i int) []byte {
		b := bytes.Clone(good)
		b[(i+len(b))%len(b)] ^= 0x40
		return b
	}
	cases := []struct {
		name  string
		frame []byte
		want  error
	}{
		{"header altered", flip(0), ErrAuth},
		{"ciphertext altered", flip(10), ErrAuth},
		{"tag altered", flip(-15), ErrAuth},
		{"IV altered", flip(-5), ErrAuth},
		{"unknown key index", append(bytes.Clone(good[:len(good)-1]), 2), ErrNoKey},
		{"IV length 0", append(bytes.Clone(good[:len(good)-2]), 0, 1), ErrMalformed},
		{"IV length too long", append(bytes.Clone(good[:len(good)-2]), 200, 1), ErrShortFrame},
		{"IV length 16", append(bytes.Clone(good[:len(good)-2]), 16, 1), ErrAuth},
		{"key index only", []byte{1}, ErrShortFrame},
		{"trailer only", []byte{12, 1}, ErrShortFrame},
		{"no tag", append([]byte{0x78}, good[len(good)-14:]...), ErrShortFrame},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := NewDecryptor(ring, Opus).Decrypt(tc.frame)
			if !errors.Is(err, tc.want) {
				t.Fatalf("Decrypt: %v, want %v", err, tc.want)
			}
		})
	}
	t.Run("wrong key at the index", func(t *testing.T) {
		other := NewKeyRing()
		if err := other.SetKey(1, testKey(99)); err != nil {
			t.Fatal(err)
		}
		if _, err := NewDecryptor(other, Opus).Decrypt(good); !errors.Is(err, ErrAuth) {
			t.Fatalf("Decrypt: %v, want %v", err, ErrAuth)
		}
	})
	t.Run("codec mismatch", func(t *testing.T) {
		// A VP8 delta frame's 3 clear bytes are not the Opus frame's 1.
		if _, err := NewDecryptor(ring, VP8).Decrypt(good); !errors.Is(err, ErrAuth) {
			t.Fatalf("Decrypt: %v, want %v", err, ErrAuth)
		}
	})
}

func TestEncryptErrors(t *testing.T) {
	if _, err := NewEncryptor(NewKeyRing(), Opus).Encrypt([]byte{1, 2}); !errors.Is(err, ErrNoKey) {
		t.Fatalf("Encrypt without a key: %v, want %v", err, ErrNoKey)
	}
	ring := ringWith(t, 0)
	if _, err := NewEncryptor(ring, VP8).Encrypt(vp8Frame(true, 9, 1)); !errors.Is(err, ErrShortFrame) {
		t.Fatalf("Encrypt 9-byte VP8 key frame: %v, want %v", err, ErrShortFrame)
	}
	for _, f := range [][]byte{
		accessUnit(nal{4, testSPS}, nal{4, testPPS}),          // no slice
		append([]byte{0xff}, h264Delta(100, 1)...),            // leading data
		{0, 0, 0, 1, 0x65, 0x88, 0x84},                        // slice in the last 3 bytes
		append(h264Delta(100, 1)[:4], 0x67, 1, 2, 3, 4, 5, 6), // SPS only
		{0, 0, 0, 1, 0x02, 0x01, 0x88, 0x84, 0x21},            // reads as an H.265 slice only
		{0, 0, 0, 1, 0x41, 0x00, 0x9a, 0x10, 0x21},            // slice data starts with 00
	} {
		if _, err := NewEncryptor(ring, H264).Encrypt(f); !errors.Is(err, ErrNoSlice) {
			t.Fatalf("Encrypt %x: %v, want %v", f, err, ErrNoSlice)
		}
	}
	if out, err := NewEncryptor(ring, Opus).Encrypt(nil); err != nil || len(out) != 0 {
		t.Fatalf("Encrypt(empty) = %x, %v; want it passed through", out, err)
	}
	if err := NewKeyRing().SetKey(0, make([]byte, 15)); !errors.Is(err, ErrKeyLength) {
		t.Fatalf("SetKey(15 bytes): %v, want %v", err, ErrKeyLength)
	}
	if err := NewKeyRing().SetCurrent(3); !errors.Is(err, ErrNoKey) {
		t.Fatalf("SetCurrent without key: %v, want %v", err, ErrNoKey)
	}
}

func TestKeyRotation(t *testing.T) {
	send := ringWith(t, 0)
	recv := ringWith(t, 0)
	enc := NewEncryptor(send, Opus)
	dec := NewDecryptor(recv, Opus)
	old, err := enc.Encrypt(opusFrame(80, 1))
	if err != nil {
		t.Fatal(err)
	}
	old = bytes.Clone(old)
	// A new key at index 1, as Element Call rotates: set everywhere first,
	// used for sending after the delay.
	for _, r := range []*KeyRing{send, recv} {
		if err := r.SetKey(1, testKey(42)); err != nil {
			t.Fatal(err)
		}
	}
	if err := send.SetCurrent(1); err != nil {
		t.Fatal(err)
	}
	cur, err := enc.Encrypt(opusFrame(80, 2))
	if err != nil {
		t.Fatal(err)
	}
	if cur[len(cur)-1] != 1 {
		t.Fatalf("key index %d after rotation, want 1", cur[len(cur)-1])
	}
	if _, err := dec.Decrypt(cur); err != nil {
		t.Fatalf("new key: %v", err)
	}
	// A frame still in flight under the old key decrypts.
	if got, err := dec.Decrypt(old); err != nil || !bytes.Equal(got, opusFrame(80, 1)) {
		t.Fatalf("old key after rotation: %v", err)
	}
	// Replacing a key: frames under the replaced key fail, cleanly.
	if err := recv.SetKey(0, testKey(77)); err != nil {
		t.Fatal(err)
	}
	if _, err := dec.Decrypt(old); !errors.Is(err, ErrAuth) {
		t.Fatalf("replaced key: %v, want %v", err, ErrAuth)
	}
}

func TestIVsNeverRepeat(t *testing.T) {
	ring := ringWith(t, 0)
	seen := map[[ivLength]byte]bool{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Go(func() {
			enc := NewEncryptor(ring, Codec(g%3+1))
			frame := map[Codec][]byte{Opus: opusFrame(20, 1), VP8: vp8Frame(false, 20, 1), H264: h264Delta(20, 1)}[Codec(g%3+1)]
			for range 1000 {
				out, err := enc.Encrypt(frame)
				if err != nil {
					t.Error(err)
					return
				}
				plain := out
				if g%3+1 == int(H264) && needsRBSPUnescaping(out) {
					plain = h264nal.AppendUnescaped(nil, out)
				}
				var iv [ivLength]byte
				copy(iv[:], plain[len(plain)-2-ivLength:])
				mu.Lock()
				if seen[iv] {
					t.Errorf("IV %x used twice", iv)
				}
				seen[iv] = true
				mu.Unlock()
			}
		})
	}
	// Keys change under the encryptors' feet (the sync loop's to-device).
	wg.Go(func() {
		for i := range 200 {
			if err := ring.SetKey(uint8(i%3), testKey(byte(i))); err != nil {
				t.Error(err)
			}
			if err := ring.SetCurrent(uint8(i % 3)); err != nil {
				t.Error(err)
			}
		}
	})
	wg.Wait()
}

func TestServerInjectedFrames(t *testing.T) {
	ring := ringWith(t, 0)
	trailer := []byte("lk-sif-trailer")
	// livekit's injected Opus silence frame (sifPayload.ts OpusSilenceFrame).
	silence := append([]byte{0xf8, 0xff, 0xfe}, make([]byte, 77)...)
	if sha256.Sum256(silence) != sifPayloadHashes[4] {
		t.Fatal("test fixture is not livekit's Opus silence frame")
	}
	dec := NewDecryptor(ring, Opus)
	dec.SetSIFTrailer(trailer)
	got, err := dec.Decrypt(append(bytes.Clone(silence), trailer...))
	if err != nil || !bytes.Equal(got, silence) {
		t.Fatalf("injected silence: %x, %v", got, err)
	}
	if _, err := dec.Decrypt(append([]byte{0x78, 1, 2, 3}, trailer...)); !errors.Is(err, ErrUnknownSIF) {
		t.Fatalf("other frame with the trailer: %v, want %v", err, ErrUnknownSIF)
	}
	// Without a trailer set, the same bytes are just a frame that fails.
	if _, err := NewDecryptor(ring, Opus).Decrypt(append(bytes.Clone(silence), trailer...)); err == nil {
		t.Fatal("decrypted an injected frame without a SIF trailer set")
	}
}

func TestCodecFromMIME(t *testing.T) {
	for mime, want := range map[string]Codec{"audio/opus": Opus, "video/VP8": VP8, "video/h264": H264} {
		if got, err := CodecFromMIME(mime); err != nil || got != want {
			t.Errorf("CodecFromMIME(%q) = %v, %v; want %v", mime, got, err, want)
		}
	}
	if _, err := CodecFromMIME("video/AV1"); !errors.Is(err, ErrCodec) {
		t.Errorf("CodecFromMIME(video/AV1): %v, want %v", err, ErrCodec)
	}
}
