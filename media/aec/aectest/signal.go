// Package aectest synthesises what echo tests need without a room or a
// recording: speech-like talkers, a room's echo path and street noise.
// media/aec's own tests and media/alsa's live-path test share it, so both
// measure on the same signals.
package aectest

import (
	"math"
	"math/rand/v2"

	"github.com/doorbell/intercom/media"
)

// frame is the 10 ms unit levels are measured in.
const frame = media.SampleRate / 100

// Echo tests need speech without a recording (nothing can be fetched
// here), so they synthesise it with the source-filter model of speech: a
// glottal pulse train with a moving pitch, shaped by formant resonances of
// a vowel per syllable, with unvoiced (noise) onsets, a syllable-rate
// envelope and pauses between phrases. What matters to an echo canceller
// is that it is non-stationary, coloured, with gaps, like speech.

// Talker is a voice: its mean pitch and how its formants sit relative to
// an adult male's.
type Talker struct {
	F0, Formants float64
}

var (
	Resident = Talker{F0: 115, Formants: 1}    // the resident
	Visitor  = Talker{F0: 210, Formants: 1.17} // the visitor
)

// vowels are F1–F3 (Hz) of five vowels for an adult male voice (average
// values from the phonetics literature).
var vowels = [][3]float64{
	{730, 1090, 2440}, // a
	{270, 2290, 3010}, // i
	{300, 870, 2240},  // u
	{530, 1840, 2480}, // e
	{570, 840, 2410},  // o
}

// Speech returns n samples (float, full scale 1) of a speech-like signal
// whose active parts have RMS level dBFS.
func Speech(seed uint64, n int, tk Talker, level float64) []float64 {
	rng := rand.New(rand.NewPCG(seed, 0x5eec4))
	const fs = float64(media.SampleRate)
	out := make([]float64, n)
	// Per-sample targets: envelope, pitch, formants, and noise share.
	env := make([]float64, n)
	unvoiced := make([]float64, n)
	type seg struct {
		start, end int
		f          [3]float64
	}
	var segs []seg
	t := int(rng.Float64() * 0.3 * fs)
	for t < n {
		syllables := 3 + rng.IntN(6)
		for s := 0; s < syllables && t < n; s++ {
			d := int((0.14 + 0.16*rng.Float64()) * fs)
			end := min(t+d, n)
			v := vowels[rng.IntN(len(vowels))]
			segs = append(segs, seg{t, end, v})
			stress := 0.5 + 0.5*rng.Float64()
			onset := 0
			if rng.Float64() < 0.4 { // a fricative or plosive onset
				onset = int((0.03 + 0.04*rng.Float64()) * fs)
			}
			for i := t; i < end; i++ {
				x := float64(i-t) / float64(end-t)
				env[i] = stress * math.Pow(math.Sin(math.Pi*x), 0.6)
				if i-t < onset {
					unvoiced[i] = 1
				}
			}
			t = end + int(0.02*rng.Float64()*fs)
		}
		t += int((0.25 + 0.6*rng.Float64()) * fs) // a pause
	}
	// Glottal source: one pulse per pitch period, pitch drifting with a
	// slow contour and declining across the signal, then two one-pole
	// low-passes for the source's spectral tilt.
	var (
		phase, lp1, lp2 float64
		f0              float64
		r1, r2, r3      resonator
		si              int
		vibrato         = rng.Float64() * 2 * math.Pi
		form            = vowels[0]
	)
	for i := 0; i < n; i++ {
		for si < len(segs) && segs[si].end <= i {
			si++
		}
		if si < len(segs) && i >= segs[si].start {
			form = segs[si].f
		}
		if i%48 == 0 { // retune the formants every millisecond, gliding
			r1.tune(form[0]*tk.Formants, 80, fs)
			r2.tune(form[1]*tk.Formants, 100, fs)
			r3.tune(form[2]*tk.Formants, 140, fs)
			tt := float64(i) / fs
			f0 = tk.F0 * (1 + 0.12*math.Sin(2*math.Pi*0.9*tt+vibrato) + 0.05*math.Sin(2*math.Pi*3.1*tt))
		}
		phase += f0 / fs
		var ex float64
		if phase >= 1 {
			phase -= 1
			ex = 1
		}
		lp1 += 0.12 * (ex - lp1)
		lp2 += 0.12 * (lp1 - lp2)
		voiced := lp2 * (1 - unvoiced[i])
		noise := (rng.Float64()*2 - 1) * (0.02*unvoiced[i] + 0.001)
		x := r3.step(r2.step(r1.step(voiced))) + noise
		out[i] = x * env[i]
	}
	scale(out, level)
	return out
}

// resonator is a two-pole formant filter whose centre glides to its
// target so retuning does not click.
type resonator struct {
	f, b, y1, y2 float64
	a1, a2, g    float64
}

func (r *resonator) tune(f, bw, fs float64) {
	if r.f == 0 {
		r.f = f
	}
	r.f += 0.1 * (f - r.f)
	rad := math.Exp(-math.Pi * bw / fs)
	r.a1 = 2 * rad * math.Cos(2*math.Pi*r.f/fs)
	r.a2 = -rad * rad
	r.g = 1 - rad
}

func (r *resonator) step(x float64) float64 {
	y := r.g*x + r.a1*r.y1 + r.a2*r.y2
	r.y2, r.y1 = r.y1, y
	return y
}

// scale sets the RMS of x's active 10 ms frames (those within 30 dB of the
// loudest) to level dBFS.
func scale(x []float64, level float64) {
	var peak float64
	for off := 0; off+frame <= len(x); off += frame {
		peak = max(peak, Energy(x[off:off+frame]))
	}
	var sum float64
	var count int
	for off := 0; off+frame <= len(x); off += frame {
		if e := Energy(x[off : off+frame]); e > peak/1000 {
			sum += e
			count += frame
		}
	}
	g := math.Pow(10, level/20) / math.Sqrt(sum/float64(count))
	for i := range x {
		x[i] *= g
	}
}

// Energy is the sum of squares of x.
func Energy(x []float64) float64 {
	var e float64
	for _, v := range x {
		e += v * v
	}
	return e
}

// Tap is one reflection of a room impulse response: At samples after the
// sound, Gain of it.
type Tap struct {
	At   int
	Gain float64
}

// Room returns an echo path: the direct sound from the speaker after delay
// samples, a dense first 2 ms (the box and its mounting), then sparse
// reflections growing denser as they decay exponentially (RT60 about
// 180 ms) up to 150 ms, scaled so the echo's energy is gain dB relative to
// what is played.
func Room(seed uint64, delay int, gain float64) []Tap {
	rng := rand.New(rand.NewPCG(seed, 0x2007))
	const fs = float64(media.SampleRate)
	tau := 0.18 / 6.9 * fs // energy falls 60 dB in RT60
	var taps []Tap
	for i := 0; i < int(0.002*fs); i++ {
		g := rng.NormFloat64() * math.Exp(-float64(i)/tau) * 0.3
		if i == 0 {
			g = 1
		}
		taps = append(taps, Tap{delay + i, g})
	}
	for t := 0.002 * fs; t < 0.15*fs; {
		// Reflection density grows with the square of time in a room, up
		// to about a thousand a second, where the tail is diffuse anyway
		// (and the convolution stays cheap under the race detector).
		rate := 0.002 * (1 + math.Pow(t/(0.01*fs), 2))
		t += 1 + rng.ExpFloat64()/min(rate, 0.02)
		taps = append(taps, Tap{delay + int(t), rng.NormFloat64() * 0.4 * math.Exp(-t/tau)})
	}
	var e float64
	for _, tp := range taps {
		e += tp.Gain * tp.Gain
	}
	g := math.Pow(10, gain/20) / math.Sqrt(e)
	for i := range taps {
		taps[i].Gain *= g
	}
	return taps
}

// Convolve plays x through the echo path.
func Convolve(x []float64, taps []Tap) []float64 {
	y := make([]float64, len(x))
	for _, tp := range taps {
		for i := tp.At; i < len(x); i++ {
			y[i] += tp.Gain * x[i-tp.At]
		}
	}
	return y
}

// Noise is a pinkish (one-pole low-passed) background at level dBFS RMS.
func Noise(seed uint64, n int, level float64) []float64 {
	rng := rand.New(rand.NewPCG(seed, 0x401e))
	y := make([]float64, n)
	var lp float64
	for i := range y {
		lp += 0.05 * (rng.NormFloat64() - lp)
		y[i] = lp
	}
	var e float64
	for _, v := range y {
		e += v * v
	}
	g := math.Pow(10, level/20) / math.Sqrt(e/float64(n))
	for i := range y {
		y[i] *= g
	}
	return y
}
