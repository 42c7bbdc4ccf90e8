package media

import (
	"bytes"
	"testing"
	"time"
)

// TestNoisyTestPattern: each frame is the pattern's with every luma
// sample moved by −12 to +4 levels and chroma untouched; the noise
// changes from frame to frame, and two patterns give the same frames
// (benchmarks compare runs).
func TestNoisyTestPattern(t *testing.T) {
	f := VideoFormat{Width: 160, Height: 120, FPS: 15}
	plain, err := NewTestPattern(f)
	if err != nil {
		t.Fatal(err)
	}
	a, err := NewNoisyTestPattern(f)
	if err != nil {
		t.Fatal(err)
	}
	b, err := NewNoisyTestPattern(f)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Unix(1_800_000_000, 0)
	var prev []byte
	for i := range 3 {
		at := now.Add(time.Duration(i) * f.Interval())
		want := plain.Render(at).Image
		got := a.Render(at).Image
		moved := 0
		for j := range want.Y {
			d := int(got.Y[j]) - int(want.Y[j])
			if d < -12 || d > 4 {
				t.Fatalf("frame %d: luma %d moved by %d", i, j, d)
			}
			if d != 0 {
				moved++
			}
		}
		if moved < len(want.Y)/2 {
			t.Errorf("frame %d: only %d of %d luma samples noisy", i, moved, len(want.Y))
		}
		if !bytes.Equal(got.Cb, want.Cb) || !bytes.Equal(got.Cr, want.Cr) {
			t.Errorf("frame %d: chroma changed", i)
		}
		if other := b.Render(at).Image; !bytes.Equal(other.Y, got.Y) {
			t.Errorf("frame %d: two patterns differ", i)
		}
		if bytes.Equal(prev, got.Y) {
			t.Errorf("frame %d: same noise as the frame before", i)
		}
		prev = bytes.Clone(got.Y)
	}
	if _, err := NewNoisyTestPattern(VideoFormat{}); err == nil {
		t.Error("invalid format accepted")
	}
}
