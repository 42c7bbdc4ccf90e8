package media

import (
	"bytes"
	"context"
	"testing"
	"testing/synctest"
	"time"
)

func TestAppendClockAndCounter(t *testing.T) {
	ts := time.Date(2026, 1, 2, 3, 4, 5, 67_000_000, time.UTC)
	if got := string(appendClock(nil, ts)); got != "03:04:05.067" {
		t.Errorf("clock = %q", got)
	}
	for n, want := range map[uint64]string{0: "#0000000", 42: "#0000042", 123456789: "#123456789"} {
		if got := string(appendCounter(nil, n)); got != want {
			t.Errorf("counter(%d) = %q, want %q", n, got, want)
		}
	}
}

func TestTestPatternDrawsClockAndCounter(t *testing.T) {
	f := VideoFormat{Width: 640, Height: 480, FPS: 15}
	p, err := NewTestPattern(f)
	if err != nil {
		t.Fatal(err)
	}
	ts := time.Date(2026, 1, 2, 12, 34, 56, 789_000_000, time.Local)
	fr := p.Render(ts)
	if fr.Seq != 1 || !fr.Time.Equal(ts) {
		t.Fatalf("seq %d time %v", fr.Seq, fr.Time)
	}
	// The clock's pixels must be exactly what drawText makes of the text.
	scale := f.Height / 120
	want := make([]byte, len(fr.Image.Y))
	copy(want, fr.Image.Y)
	drawText(want, fr.Image.YStride, f.Width, f.Height, 2*scale, 2*scale, scale, []byte("12:34:56.789"))
	if !bytes.Equal(want, fr.Image.Y) {
		t.Error("clock text differs from 12:34:56.789")
	}
	other := make([]byte, len(fr.Image.Y))
	copy(other, fr.Image.Y)
	drawText(other, fr.Image.YStride, f.Width, f.Height, 2*scale, 2*scale, scale, []byte("12:34:56.788"))
	if bytes.Equal(other, fr.Image.Y) {
		t.Error("different clock text renders the same pixels")
	}
	prevY := append([]byte(nil), fr.Image.Y...)
	fr = p.Render(ts.Add(time.Second))
	if bytes.Equal(prevY, fr.Image.Y) {
		t.Error("consecutive frames identical")
	}
}

// TestTestPatternPacing runs on synctest's clock, so the pacing is
// exact: a wall-clock bound on a loaded machine is not.
func TestTestPatternPacing(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p, err := NewTestPattern(VideoFormat{Width: 64, Height: 48, FPS: 50})
		if err != nil {
			t.Fatal(err)
		}
		defer p.Close()
		ctx := context.Background()
		start := time.Now()
		for i := 0; i < 10; i++ {
			if _, err := p.ReadFrame(ctx); err != nil {
				t.Fatal(err)
			}
		}
		// Ten frames at 50 fps: the first is immediate, nine intervals follow.
		if el := time.Since(start); el != 180*time.Millisecond {
			t.Errorf("10 frames took %v, want 180ms", el)
		}
		cctx, cancel := context.WithCancel(ctx)
		cancel()
		if _, err := p.ReadFrame(cctx); err == nil {
			t.Error("ReadFrame after cancel succeeded")
		}
	})
}

func TestBadFormat(t *testing.T) {
	for _, f := range []VideoFormat{{}, {Width: 641, Height: 480, FPS: 15}, {Width: 640, Height: 480}} {
		if _, err := NewTestPattern(f); err == nil {
			t.Errorf("%+v accepted", f)
		}
	}
}

func TestTone(t *testing.T) {
	tone := NewTone(440, 0.25)
	var ms float64
	for i := 0; i < 5; i++ {
		pcm := tone.Next()
		if len(pcm) != AudioFrameSamples {
			t.Fatalf("len %d", len(pcm))
		}
		for _, v := range pcm {
			f := float64(v) / 32768
			ms += f * f
		}
	}
	ms /= 5 * AudioFrameSamples
	// A sine at 0.25 of full scale: 0.25²/2, i.e. -15 dBov.
	if got := dBov(ms); got < -15.5 || got > -14.5 {
		t.Errorf("tone level %.1f dBov, want -15", got)
	}
}

func BenchmarkTestPatternVGA(b *testing.B) {
	p, err := NewTestPattern(VideoFormat{Width: 640, Height: 480, FPS: 15})
	if err != nil {
		b.Fatal(err)
	}
	now := time.Now()
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		p.Render(now.Add(time.Duration(i) * time.Millisecond))
	}
}

func BenchmarkTone20ms(b *testing.B) {
	tone := NewTone(440, 0.25)
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		tone.Next()
	}
}
