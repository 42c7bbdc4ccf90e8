package framecrypt

import (
	"math/rand/v2"
	"testing"
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
	return appendRBSPEscaped([]byte{header}, raw)
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
