package framecrypt

import (
	"bytes"
	"crypto/cipher"
	"math/rand/v2"
	"testing"

	"github.com/doorbell/intercom/media/h264nal"
)

// testKey is a raw key as Element Call sends it (16 bytes), made from seed.
func testKey(seed byte) []byte {
	k := make([]byte, 16)
	for i := range k {
		k[i] = seed + byte(i)*17
	}
	return k
}

// ringWith returns a ring with the keys at the indices and the last one
// chosen for sending.
func ringWith(t testing.TB, indices ...uint8) *KeyRing {
	t.Helper()
	r := NewKeyRing()
	for _, i := range indices {
		if err := r.SetKey(i, testKey(i)); err != nil {
			t.Fatal(err)
		}
	}
	if len(indices) > 0 {
		if err := r.SetCurrent(indices[len(indices)-1]); err != nil {
			t.Fatal(err)
		}
	}
	return r
}

// nal is one NAL unit with the start code before it (3 or 4 bytes).
type nal struct {
	startCode int
	body      []byte
}

// accessUnit joins NAL units into an Annex-B access unit.
func accessUnit(nals ...nal) []byte {
	var au []byte
	for _, n := range nals {
		if n.startCode == 4 {
			au = append(au, 0)
		}
		au = append(au, 0, 0, 1)
		au = append(au, n.body...)
	}
	return au
}

// sliceNAL is a NAL unit of the given header byte followed by size bytes of
// pseudo-random slice data, escaped as a real encoder escapes it (no start
// code inside), starting with 0x88 as first_mb_in_slice 0 does.
func sliceNAL(header byte, size int, seed uint64) []byte {
	rng := rand.New(rand.NewPCG(seed, 1))
	raw := make([]byte, size)
	for i := range raw {
		raw[i] = byte(rng.Uint32())
		if rng.IntN(8) == 0 {
			raw[i] = 0 // zeros, so that escaping is exercised
		}
	}
	raw[0] = 0x88
	return h264nal.AppendEscaped([]byte{header}, raw)
}

var (
	testSPS = []byte{0x67, 0x42, 0xc0, 0x1f, 0xda, 0x01, 0x40, 0x16, 0xec, 0x04, 0x40, 0x00, 0x00, 0x03, 0x00, 0x40, 0x00, 0x00, 0x0f, 0x23, 0xc6, 0x0c, 0x92}
	testPPS = []byte{0x68, 0xce, 0x0f, 0xc8}
)

// h264Key is an IDR access unit: SPS, PPS (4-byte start codes) and an IDR
// slice behind a 3-byte start code, as x264 writes them.
func h264Key(size int, seed uint64) []byte {
	return accessUnit(nal{4, testSPS}, nal{4, testPPS}, nal{3, sliceNAL(0x65, size, seed)})
}

// h264Delta is a non-IDR access unit of one slice.
func h264Delta(size int, seed uint64) []byte {
	return accessUnit(nal{4, sliceNAL(0x41, size, seed)})
}

// vp8Frame is a VP8 frame: key frames have P=0 and the start code
// 9d 01 2a (RFC 6386 section 9.1).
func vp8Frame(key bool, size int, seed uint64) []byte {
	rng := rand.New(rand.NewPCG(seed, 2))
	f := make([]byte, size)
	for i := range f {
		f[i] = byte(rng.Uint32())
	}
	if key {
		f[0] &^= 1
		copy(f[3:], []byte{0x9d, 0x01, 0x2a, 0x80, 0x02, 0xe0, 0x01})
	} else {
		f[0] |= 1
	}
	return f
}

// opusFrame is an Opus packet: a TOC byte and size-1 bytes.
func opusFrame(size int, seed uint64) []byte {
	rng := rand.New(rand.NewPCG(seed, 3))
	f := make([]byte, size)
	for i := range f {
		f[i] = byte(rng.Uint32())
	}
	f[0] = 0x78 // SILK-only wideband, 20 ms, one frame (RFC 6716 section 3.1)
	return f
}

// escapeHeavyH264 returns a ring sending with raw at index and an H.264
// delta frame whose ciphertext, encrypted next by that ring, is want: the
// ring's IV salt and counter are fixed, so the GCM keystream is known
// (CTR from the IV followed by counter 2, NIST SP 800-38D section 7.1) and
// the plaintext is want XOR keystream. Frames whose ciphertext needs RBSP
// escaping are otherwise rare (00 00 0x, x ≤ 3, about once in 2^22 bytes).
func escapeHeavyH264(t testing.TB, index uint8, raw, want []byte) (*KeyRing, []byte) {
	t.Helper()
	r := NewKeyRing()
	if err := r.SetKey(index, raw); err != nil {
		t.Fatal(err)
	}
	if err := r.SetCurrent(index); err != nil {
		t.Fatal(err)
	}
	r.ivSalt = [ivLength]byte{0xa1, 0xb2, 0xc3, 0xd4, 0xe5, 0xf6, 0x07, 0x18, 0x29, 0x3a, 0x4b, 0x5c}
	r.ivCounter.Store(41)
	var iv [ivLength]byte
	r.nextIV(iv[:])
	r.ivCounter.Store(41) // Encrypt draws the same IV
	counter := append(iv[:], 0, 0, 0, 2)
	stream := cipher.NewCTR(r.key(index).block, counter)
	plain := make([]byte, len(want))
	stream.XORKeyStream(plain, want)
	return r, append([]byte{0, 0, 0, 1, 0x41, 0x9a}, plain...)
}

// escapeHeavyCiphertext is ciphertext full of what RBSP escaping must
// escape: start codes, runs of zeros, 00 00 followed by 00–03.
func escapeHeavyCiphertext() []byte {
	return bytes.Repeat([]byte{0, 0, 0, 1, 0, 0, 2, 0, 0, 3, 0, 0, 0, 0, 0, 0xff, 0, 0, 1}, 40)
}
