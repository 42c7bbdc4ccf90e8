package media

import (
	"math"
	"slices"
	"testing"
	"time"
)

func limiterSine(freq, amp float64, d time.Duration) []int16 {
	out := make([]int16, samples(d))
	for i := range out {
		out[i] = int16(amp * 32767 * math.Sin(2*math.Pi*freq*float64(i)/SampleRate))
	}
	return out
}

// distortion is the share of pcm's energy that is not the freq Hz sine
// (harmonics a clipped wave grows), from a least-squares fit of that sine.
func distortion(pcm []int16, freq float64) float64 {
	var ss, cc, sc, xs, xc, xx float64
	for i, v := range pcm {
		x := float64(v)
		s, c := math.Sincos(2 * math.Pi * freq * float64(i) / SampleRate)
		ss, cc, sc, xs, xc, xx = ss+s*s, cc+c*c, sc+s*c, xs+x*s, xc+x*c, xx+x*x
	}
	det := ss*cc - sc*sc
	a, b := (xs*cc-xc*sc)/det, (xc*ss-xs*sc)/det
	var res float64
	for i, v := range pcm {
		s, c := math.Sincos(2 * math.Pi * freq * float64(i) / SampleRate)
		r := float64(v) - a*s - b*c
		res += r * r
	}
	return res / xx
}

func peak(pcm []int16) float64 {
	var p float64
	for _, v := range pcm {
		p = max(p, math.Abs(float64(v)))
	}
	return p
}

// A resident 12 dB too loud for the speaker: the limiter brings the sine
// under the ceiling as a sine (no harmonics), where saturating gain alone,
// as the speaker had before, squares it off. The distortion figure can
// fail: it is checked to catch the hard clip.
func TestLimiterDoesNotClip(t *testing.T) {
	in := limiterSine(440, 0.5, time.Second)
	gain := DBToGain(12) // peaks at 2x full scale
	ceiling := 32768 * DBToGain(LimiterCeilingDBFS)

	l := NewLimiter(LimiterCeilingDBFS, LimiterLookahead, LimiterRelease)
	out := slices.Clone(in)
	for off := 0; off < len(out); off += AudioFrameSamples {
		l.Process(out[off:off+AudioFrameSamples], gain)
	}
	if p := peak(out); p > ceiling+1 {
		t.Errorf("limited peak %.0f above the ceiling %.0f", p, ceiling)
	}
	settled := out[SampleRate/5:] // after the attack and the first release
	d := distortion(settled, 440)
	t.Logf("limited: peak %.0f (ceiling %.0f), %.4f %% outside 440 Hz", peak(settled), ceiling, 100*d)
	if d > 0.001 {
		t.Errorf("limited sine has %.2f %% of its energy outside 440 Hz, want < 0.1 %%", 100*d)
	}
	if p := peak(settled); p < 0.9*ceiling {
		t.Errorf("limited to %.0f, want close to the ceiling %.0f", p, ceiling)
	}

	clipped := slices.Clone(in)
	ApplyGain(clipped, gain)
	if d := distortion(clipped[SampleRate/5:], 440); d < 0.01 {
		t.Fatalf("the hard clip measures only %.2f %% distortion: the check cannot tell", 100*d)
	}
}

// Below the ceiling the limiter only delays (by the lookahead) and applies
// the gain: what the resident says reaches the speaker unchanged.
func TestLimiterTransparentBelowCeiling(t *testing.T) {
	in := limiterSine(1000, 0.4, 200*time.Millisecond)
	l := NewLimiter(LimiterCeilingDBFS, LimiterLookahead, LimiterRelease)
	out := slices.Clone(in)
	for off := 0; off < len(out); off += AudioFrameSamples {
		if g := l.Process(out[off:off+AudioFrameSamples], 1); g != 1 {
			t.Fatalf("gain reduced to %v on a quiet signal", g)
		}
	}
	look := samples(l.Delay())
	if !slices.Equal(out[look:], in[:len(in)-look]) {
		t.Error("quiet signal changed by more than the lookahead's delay")
	}
	if slices.ContainsFunc(out[:look], func(v int16) bool { return v != 0 }) {
		t.Error("the first lookahead's worth is not the silence before the signal")
	}
}

// A sudden loud burst after silence (a door slam on the resident's side):
// the lookahead has the gain down before the first loud sample leaves, and
// the gain comes back within a few release times once it is over.
func TestLimiterAttackAndRelease(t *testing.T) {
	quiet := limiterSine(300, 0.1, 300*time.Millisecond)
	burst := limiterSine(300, 1, 100*time.Millisecond)
	in := slices.Concat(quiet, burst, quiet, quiet)
	l := NewLimiter(LimiterCeilingDBFS, LimiterLookahead, LimiterRelease)
	out := slices.Clone(in)
	for off := 0; off < len(out); off += AudioFrameSamples {
		l.Process(out[off:off+AudioFrameSamples], DBToGain(6))
	}
	ceiling := 32768 * DBToGain(LimiterCeilingDBFS)
	if p := peak(out); p > ceiling+1 {
		t.Errorf("burst's peak %.0f passes the ceiling %.0f", p, ceiling)
	}
	look := samples(l.Delay())
	// The quiet tone after the burst, 6 dB up: 0.2 of full scale once
	// the gain has recovered (5 release times, < 1 % off).
	after := out[len(quiet)+len(burst)+look+samples(5*LimiterRelease):]
	if p := peak(after) / 32767; p < 0.195 || p > 0.205 {
		t.Errorf("after the burst the quiet tone peaks at %.3f of full scale, want 0.2", p)
	}
}

// BenchmarkLimiter is the limiter's cost per 20 ms frame of a signal that
// needs limiting all along (the dearest case).
func BenchmarkLimiter(b *testing.B) {
	in := limiterSine(440, 0.9, AudioFrame)
	frame := make([]int16, len(in))
	l := NewLimiter(LimiterCeilingDBFS, LimiterLookahead, LimiterRelease)
	for b.Loop() {
		copy(frame, in)
		l.Process(frame, 2)
	}
}
