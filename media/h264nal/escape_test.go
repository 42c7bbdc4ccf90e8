package h264nal

import (
	"bytes"
	"math/rand/v2"
	"testing"
)

// cases pair an RBSP with its escaped form (ITU-T H.264 section 7.4.1).
var cases = []struct {
	name          string
	rbsp, escaped []byte
}{
	{"empty", nil, nil},
	{"no zeros", []byte{1, 2, 3}, []byte{1, 2, 3}},
	{"00 00 00", []byte{0, 0, 0}, []byte{0, 0, 3, 0}},
	{"00 00 01", []byte{0, 0, 1}, []byte{0, 0, 3, 1}},
	{"00 00 02", []byte{0, 0, 2}, []byte{0, 0, 3, 2}},
	{"00 00 03", []byte{0, 0, 3}, []byte{0, 0, 3, 3}},
	{"00 00 04 stays", []byte{0, 0, 4}, []byte{0, 0, 4}},
	{"trailing 00 00 stays", []byte{7, 0, 0}, []byte{7, 0, 0}},
	// After an inserted 03 the zeros are counted afresh: the third zero
	// of the run starts a new pair.
	{"zero run", []byte{0, 0, 0, 0, 0, 0}, []byte{0, 0, 3, 0, 0, 3, 0, 0}},
	{"start codes", []byte{9, 0, 0, 0, 1, 0, 0, 1}, []byte{9, 0, 0, 3, 0, 1, 0, 0, 3, 1}},
}

func TestAppendEscaped(t *testing.T) {
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			prefix := []byte{0xaa}
			got := AppendEscaped(bytes.Clone(prefix), tc.rbsp)
			if !bytes.Equal(got, append(prefix, tc.escaped...)) {
				t.Errorf("AppendEscaped(%x) = %x, want aa%x", tc.rbsp, got, tc.escaped)
			}
		})
	}
}

func TestUnescape(t *testing.T) {
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := Unescaped(tc.escaped); !bytes.Equal(got, tc.rbsp) {
				t.Errorf("Unescaped(%x) = %x, want %x", tc.escaped, got, tc.rbsp)
			}
			prefix := []byte{0xaa}
			if got := AppendUnescaped(bytes.Clone(prefix), tc.escaped); !bytes.Equal(got, append(prefix, tc.rbsp...)) {
				t.Errorf("AppendUnescaped(%x) = aa%x, want aa%x", tc.escaped, got, tc.rbsp)
			}
		})
	}
	// Each 00 00 03 loses its 03 once, scanning on after it: in
	// 00 00 03 03 only the first goes, and 00 00 03 00 00 03 loses both.
	for in, want := range map[string][]byte{
		"\x00\x00\x03\x03":         {0, 0, 3},
		"\x00\x00\x03\x00\x00\x03": {0, 0, 0, 0},
		"\x00\x00\x00\x03\x01":     {0, 0, 0, 1},
		"\x00\x03\x00\x00":         {0, 3, 0, 0},
	} {
		if got := Unescaped([]byte(in)); !bytes.Equal(got, want) {
			t.Errorf("Unescaped(%x) = %x, want %x", in, got, want)
		}
	}
}

// TestUnescapedInPlace: a payload without emulation prevention bytes
// comes back as it is, not copied (the per-frame path reads most NAL
// units this way).
func TestUnescapedInPlace(t *testing.T) {
	in := []byte{0x65, 0, 0, 4, 1, 2}
	if got := Unescaped(in); &got[0] != &in[0] || len(got) != len(in) {
		t.Error("copied a payload with nothing to drop")
	}
	if n := testing.AllocsPerRun(10, func() { Unescaped(in) }); n != 0 {
		t.Errorf("%v allocations for a payload with nothing to drop", n)
	}
}

// FuzzRBSPRoundTrip: escaping then unescaping gives back any input, and
// the escaped form never holds 00 00 0x with x ≤ 03 other than an
// emulation prevention byte (so no start code, no 00 00 00, no 00 00 02).
func FuzzRBSPRoundTrip(f *testing.F) {
	for _, tc := range cases {
		f.Add(tc.rbsp)
	}
	f.Add([]byte{0, 0, 3, 0, 0, 3, 3})
	f.Fuzz(func(t *testing.T, rbsp []byte) {
		esc := AppendEscaped(nil, rbsp)
		if got := Unescaped(esc); !bytes.Equal(got, rbsp) {
			t.Fatalf("round trip of %x: escaped %x, back %x", rbsp, esc, got)
		}
		if got := AppendUnescaped(nil, esc); !bytes.Equal(got, rbsp) {
			t.Fatalf("AppendUnescaped round trip of %x: escaped %x, back %x", rbsp, esc, got)
		}
		for i := 0; i+2 < len(esc); i++ {
			if esc[i] != 0 || esc[i+1] != 0 || esc[i+2] > 3 {
				continue
			}
			// The only 00 00 0x allowed is an inserted 03, and one
			// is inserted only ahead of a byte ≤ 03: anything else
			// (00 00 00, 00 00 01, 00 00 02, an 03 at the end or
			// before a larger byte) is a missed escape.
			if esc[i+2] != 3 || i+3 >= len(esc) || esc[i+3] > 3 {
				t.Fatalf("escaped %x of %x holds 00 00 %02x at %d", esc, rbsp, esc[i+2], i)
			}
		}
	})
}

// benchInputs: encoder output and ciphertext look random (a 00 00 03 every
// few kilobytes at most); zeros1in8 is a NAL unit with much low-entropy
// content; heavy is what an adversary could send, an escape every six
// bytes.
func benchInputs() []struct {
	name string
	rbsp []byte
} {
	rng := rand.New(rand.NewPCG(1, 2))
	random, zeros := make([]byte, 30000), make([]byte, 30000)
	for i := range random {
		random[i], zeros[i] = byte(rng.Uint32()), byte(rng.Uint32())
		if rng.IntN(8) == 0 {
			zeros[i] = 0
		}
	}
	heavy := bytes.Repeat([]byte{0, 0, 0, 1, 0, 0, 2, 0, 0, 3, 0, 0, 0, 0, 0, 0xff, 0, 0, 1}, 1500)
	return []struct {
		name string
		rbsp []byte
	}{{"random-30KB", random}, {"zeros1in8-30KB", zeros}, {"heavy-28KB", heavy}}
}

func BenchmarkAppendEscaped(b *testing.B) {
	for _, in := range benchInputs() {
		b.Run(in.name, func(b *testing.B) {
			dst := make([]byte, 0, 2*len(in.rbsp))
			b.SetBytes(int64(len(in.rbsp)))
			for b.Loop() {
				dst = AppendEscaped(dst[:0], in.rbsp)
			}
		})
	}
}

func BenchmarkAppendUnescaped(b *testing.B) {
	for _, in := range benchInputs() {
		b.Run(in.name, func(b *testing.B) {
			esc := AppendEscaped(nil, in.rbsp)
			dst := make([]byte, 0, len(esc))
			b.SetBytes(int64(len(esc)))
			for b.Loop() {
				dst = AppendUnescaped(dst[:0], esc)
			}
		})
	}
}
