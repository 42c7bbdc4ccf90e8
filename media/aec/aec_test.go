package aec

import (
	"errors"
	"math"
	"slices"
	"testing"
	"time"
)

// With every stage off (an installer's hardware does it all) the
// microphone must come out untouched, whatever the library.
func TestStagesOffPassThrough(t *testing.T) {
	far := toPCM(speech(7, at(time.Second), farTalker, farLevel))
	mic := toPCM(speech(8, at(time.Second), nearTalker, nearLevel))
	for _, lib := range libraries() {
		t.Run(string(lib), func(t *testing.T) {
			p, err := New(Options{Library: lib, NoEcho: true, NoNoise: true, NoGain: true, NoHighPass: true})
			if err != nil {
				t.Fatal(err)
			}
			defer p.Close()
			out := slices.Clone(mic)
			for off := 0; off < len(out); off += 2 * FrameSamples {
				if err := p.Far(far[off : off+2*FrameSamples]); err != nil {
					t.Fatal(err)
				}
				if err := p.Near(out[off : off+2*FrameSamples]); err != nil {
					t.Fatal(err)
				}
			}
			if !slices.Equal(out, mic) {
				t.Error("microphone changed with every stage off")
			}
		})
	}
}

func TestErrors(t *testing.T) {
	if _, err := New(Options{Library: "nope"}); !errors.Is(err, ErrLibrary) {
		t.Errorf("unknown library: %v, want ErrLibrary", err)
	}
	for _, lib := range libraries() {
		p, err := New(Options{Library: lib})
		if err != nil {
			t.Fatal(err)
		}
		if err := p.Near(make([]int16, FrameSamples+1)); !errors.Is(err, ErrFrameSize) {
			t.Errorf("%s: odd frame: %v, want ErrFrameSize", lib, err)
		}
		if err := p.Far(make([]int16, 100)); !errors.Is(err, ErrFrameSize) {
			t.Errorf("%s: odd far frame: %v, want ErrFrameSize", lib, err)
		}
		p.Close()
		p.Close()
		if err := p.Near(make([]int16, FrameSamples)); !errors.Is(err, ErrClosed) {
			t.Errorf("%s: after Close: %v, want ErrClosed", lib, err)
		}
	}
}

// The sound card's delay can change under the door (a USB card replugged,
// a resampled path); Speex aligns the reference by the hint, so SetDelay
// must carry the change. The echo path's delay jumps from 30 to 110 ms at
// 8 s; with the hint following, the echo is cancelled again by 15–18 s.
func TestSpeexFollowsDelay(t *testing.T) {
	const seed = 3
	before, after := 30*time.Millisecond, 110*time.Millisecond
	n := at(scenarioTo)
	src := newSource(seed)
	far, e1, e2 := src.far, src.delayed(before).echo, src.delayed(after).echo
	mic := append(e1[:at(doubleFrom):at(doubleFrom)], e2[at(doubleFrom):]...)
	erle := func(follow bool) float64 {
		p, err := New(Options{Library: Speex, NoGain: true, Delay: before})
		if err != nil {
			t.Fatal(err)
		}
		defer p.Close()
		f, m := toPCM(far), toPCM(mic)
		for off := 0; off < n; off += FrameSamples {
			if follow && off == at(doubleFrom) {
				p.SetDelay(after)
			}
			if err := p.Far(f[off : off+FrameSamples]); err != nil {
				t.Fatal(err)
			}
			if err := p.Near(m[off : off+FrameSamples]); err != nil {
				t.Fatal(err)
			}
		}
		var a, b float64
		for off := at(recovered); off < n; off += FrameSamples {
			a += energy(mic[off : off+FrameSamples])
			for _, v := range m[off : off+FrameSamples] {
				b += float64(v) / 32767 * float64(v) / 32767
			}
		}
		return 10 * math.Log10(a/b)
	}
	followed, stale := erle(true), erle(false)
	t.Logf("ERLE 15–18 s after the delay jumped: %.1f dB with the hint following, %.1f dB with a stale hint", followed, stale)
	if followed < 30 {
		t.Errorf("ERLE %.1f dB after the delay change with SetDelay, want ≥ 30", followed)
	}
}

// The speaker's goroutine hands in the reference while the microphone's
// cleans its frames; the race detector checks the lock that orders them.
func TestFarAndNearConcurrently(t *testing.T) {
	for _, lib := range libraries() {
		t.Run(string(lib), func(t *testing.T) {
			p, err := New(Options{Library: lib, Delay: 40 * time.Millisecond})
			if err != nil {
				t.Fatal(err)
			}
			defer p.Close()
			far := toPCM(speech(5, at(time.Second), farTalker, farLevel))
			done := make(chan error, 1)
			go func() {
				for off := 0; off < len(far); off += 2 * FrameSamples {
					if err := p.Far(far[off : off+2*FrameSamples]); err != nil {
						done <- err
						return
					}
				}
				done <- nil
			}()
			mic := make([]int16, 2*FrameSamples)
			for range 50 {
				if err := p.Near(mic); err != nil {
					t.Fatal(err)
				}
				p.SetDelay(50 * time.Millisecond)
			}
			if err := <-done; err != nil {
				t.Fatal(err)
			}
		})
	}
}

// The speaker is fed only while something plays: when the reference stops
// for a while and comes back, Speex must hold it back by the hint again,
// not use it at once (which would throw the converged filter off). The
// resident pauses 8–9 s with nothing handed to Far; ERLE 12–18 s must stay
// that of a converged filter.
func TestSpeexReferenceGap(t *testing.T) {
	const seed, delay = 2, 80 * time.Millisecond
	src := newSource(seed)
	gapFrom, gapTo := at(doubleFrom), at(doubleFrom+time.Second)
	played := slices.Clone(src.far)
	clear(played[gapFrom:gapTo])
	echo := convolve(played, room(seed, at(delay), echoGain))
	for i := range echo {
		echo[i] += src.bg[i]
	}
	far, mic := toPCM(played), toPCM(echo)
	erle := func(withGap bool) float64 {
		p, err := New(Options{Library: Speex, NoGain: true, Delay: delay})
		if err != nil {
			t.Fatal(err)
		}
		defer p.Close()
		out := slices.Clone(mic)
		for off := 0; off < len(out); off += FrameSamples {
			if !withGap || off < gapFrom || off >= gapTo {
				if err := p.Far(far[off : off+FrameSamples]); err != nil {
					t.Fatal(err)
				}
			}
			if err := p.Near(out[off : off+FrameSamples]); err != nil {
				t.Fatal(err)
			}
		}
		var a, b float64
		for i := at(12 * time.Second); i < len(out); i++ {
			a += echo[i] * echo[i]
			b += float64(out[i]) / 32767 * float64(out[i]) / 32767
		}
		return 10 * math.Log10(a/b)
	}
	gap, fed := erle(true), erle(false)
	t.Logf("ERLE 12–18 s: %.1f dB after a 1 s gap in the reference, %.1f dB with silence fed throughout", gap, fed)
	if gap < fed-3 {
		t.Errorf("ERLE %.1f dB after a gap in the reference, want within 3 dB of %.1f", gap, fed)
	}
}

// A visitor far from the microphone must come out louder with the gain
// control on: proof that the stage is live in each library's build (a
// fixed-point speexdsp, for one, ignores SPEEX_PREPROCESS_SET_AGC).
func TestGainRaisesQuietVisitor(t *testing.T) {
	quiet := toPCM(speech(9, at(8*time.Second), nearTalker, -42))
	for _, lib := range libraries() {
		t.Run(string(lib), func(t *testing.T) {
			p, err := New(Options{Library: lib})
			if err != nil {
				t.Fatal(err)
			}
			defer p.Close()
			out := slices.Clone(quiet)
			silence := make([]int16, FrameSamples)
			for off := 0; off < len(out); off += FrameSamples {
				if err := p.Far(silence); err != nil {
					t.Fatal(err)
				}
				if err := p.Near(out[off : off+FrameSamples]); err != nil {
					t.Fatal(err)
				}
			}
			var in, got float64
			for i := at(4 * time.Second); i < len(out); i++ {
				in += float64(quiet[i]) * float64(quiet[i])
				got += float64(out[i]) * float64(out[i])
			}
			gain := 10 * math.Log10(got/in)
			t.Logf("%s: gain %.1f dB on a visitor at −42 dBFS (4–8 s)", lib, gain)
			if gain < 3 {
				t.Errorf("gain %.1f dB, want ≥ 3 (it is about 0 with the stage off)", gain)
			}
		})
	}
}
