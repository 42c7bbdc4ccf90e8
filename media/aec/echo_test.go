package aec

import (
	"fmt"
	"math"
	"slices"
	"testing"
	"time"

	"github.com/doorbell/intercom/media"
)

// The echo scenario, on one timeline: the resident talks alone (the
// canceller converges, then ERLE is measured), then the visitor talks at
// the same time (double talk: how much of the visitor survives), then the
// resident alone again (has double talk thrown the filter off?).
const (
	converged  = 2 * time.Second
	doubleFrom = 8 * time.Second
	doubleTo   = 14 * time.Second
	recovered  = 15 * time.Second
	scenarioTo = 18 * time.Second

	farLevel   = -20 // dBFS RMS of the resident's active speech at the speaker
	echoGain   = -6  // dB, speaker to microphone
	nearLevel  = -26 // dBFS: the visitor as loud as the echo
	noiseLevel = -60 // dBFS street noise
)

type scenario struct {
	delay time.Duration
	seed  uint64
}

func (s scenario) String() string { return fmt.Sprintf("delay=%v/seed=%d", s.delay, s.seed) }

// signals are one scenario's inputs: what the speaker plays, what the
// microphone hears without the visitor (echo and noise), and the visitor.
type signals struct {
	far, echo, near []float64
}

// source is what every scenario of one seed shares: the speech, the room
// at zero delay, the noise. Scenarios of other delays shift its echo, so
// the costly synthesis and convolution run once per seed.
type source struct {
	far, echo, bg, near []float64
}

func newSource(seed uint64) source {
	n := at(scenarioTo)
	far := speech(seed, n, farTalker, farLevel)
	near := make([]float64, n)
	copy(near[at(doubleFrom):at(doubleTo)], speech(seed+1000, at(doubleTo-doubleFrom), nearTalker, nearLevel))
	return source{far: far, echo: convolve(far, room(seed, 0, echoGain)), bg: noise(seed, n, noiseLevel), near: near}
}

// delayed returns the scenario with the echo arriving delay later.
func (s source) delayed(delay time.Duration) signals {
	echo := make([]float64, len(s.echo))
	d := at(delay)
	for i := range echo {
		echo[i] = s.bg[i]
		if i >= d {
			echo[i] += s.echo[i-d]
		}
	}
	return signals{far: s.far, echo: echo, near: s.near}
}

func at(d time.Duration) int { return int(d * media.SampleRate / time.Second) }

// result is what one library did with one scenario.
type result struct {
	erle      float64 // dB, resident alone after convergence
	erleEarly float64 // dB, the same in 2–4 s only
	erleAfter float64 // dB, resident alone after double talk
	nearLoss  float64 // dB the visitor's voice lost during double talk
}

// run processes the microphone signal frame by frame beside its reference,
// as the door does (the reference of a frame is handed in before the
// microphone frame of the same instant).
func run(t testing.TB, opts Options, far, mic []float64) []float64 {
	t.Helper()
	p, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	f, m := toPCM(far), toPCM(mic)
	const n = 2 * FrameSamples // the door's 20 ms frames
	for off := 0; off+n <= len(m); off += n {
		if err := p.Far(f[off : off+n]); err != nil {
			t.Fatal(err)
		}
		if err := p.Near(m[off : off+n]); err != nil {
			t.Fatal(err)
		}
	}
	out := make([]float64, len(m))
	for i, v := range m {
		out[i] = float64(v) / 32767
	}
	return out
}

// measure runs the scenario twice, with and without the visitor, with AEC,
// NS and the high-pass on and the AGC off (it would change the levels the
// figures compare). ERLE is the microphone's energy over the output's
// while the resident talks alone, in frames with echo above −50 dBFS. The
// visitor's loss is the energy of the visitor alone over the energy of the
// difference of the two outputs (what the visitor added to the output),
// in double-talk frames where the visitor is above −50 dBFS.
func measure(t testing.TB, lib Library, sc scenario, sig signals) result {
	t.Helper()
	return measureOpts(t, Options{Library: lib}, sc, sig)
}

func measureOpts(t testing.TB, opts Options, sc scenario, sig signals) result {
	t.Helper()
	opts.NoGain, opts.Delay = true, sc.delay
	mic := make([]float64, len(sig.echo))
	for i := range mic {
		mic[i] = sig.echo[i] + sig.near[i]
	}
	with := run(t, opts, sig.far, mic)
	without := run(t, opts, sig.far, sig.echo)

	active := math.Pow(10, -50.0/10) * FrameSamples
	ratio := func(num, den []float64, from, to time.Duration, gate []float64) float64 {
		var a, b float64
		for off := at(from); off+FrameSamples <= at(to); off += FrameSamples {
			if energy(gate[off:off+FrameSamples]) < active {
				continue
			}
			a += energy(num[off : off+FrameSamples])
			b += energy(den[off : off+FrameSamples])
		}
		return 10 * math.Log10(a/b)
	}
	diff := make([]float64, len(with))
	for i := range diff {
		diff[i] = with[i] - without[i]
	}
	return result{
		erle:      ratio(sig.echo, without, converged, doubleFrom, sig.echo),
		erleEarly: ratio(sig.echo, without, converged, 4*time.Second, sig.echo),
		erleAfter: ratio(sig.echo, with, recovered, scenarioTo, sig.echo),
		nearLoss:  ratio(sig.near, diff, doubleFrom, doubleTo, sig.near),
	}
}

// TestEchoCancellation holds the door's library (Speex) to what it
// measures, with margin, over echo delays across issue 16's range (seed 1;
// BenchmarkEcho prints all seeds): the visitor loses at most 1.5 dB in
// double talk (target ≤ 3 dB; it measures 0.4–0.6), the echo is ≥ 45 dB
// down once converged (target ≥ 25 dB; it measures 57–58) and ≥ 20 dB
// down in 2–8 s (it measures 25–26; the 25 dB target is met over 2–8 s,
// not yet in 2–4 s, where it measures 20–25). WebRTC is held to its
// strength, ERLE, so its binding stays proven.
func TestEchoCancellation(t *testing.T) {
	src := newSource(1)
	for _, d := range []time.Duration{20 * time.Millisecond, 60 * time.Millisecond, 120 * time.Millisecond} {
		sc := scenario{delay: d, seed: 1}
		t.Run(sc.String(), func(t *testing.T) {
			sig := src.delayed(d)
			r := measure(t, Speex, sc, sig)
			t.Logf("speexdsp: ERLE %.1f dB (2–8 s), %.1f dB after double talk, visitor lost %.1f dB", r.erle, r.erleAfter, r.nearLoss)
			if r.erle < 20 {
				t.Errorf("ERLE %.1f dB in 2–8 s, want ≥ 20", r.erle)
			}
			if r.erleAfter < 45 {
				t.Errorf("ERLE %.1f dB after double talk, want ≥ 45", r.erleAfter)
			}
			if r.nearLoss > 1.5 {
				t.Errorf("visitor suppressed by %.1f dB in double talk, want ≤ 1.5", r.nearLoss)
			}
			if d != 60*time.Millisecond || !webrtcBuilt {
				return
			}
			w := measure(t, WebRTC, sc, sig)
			t.Logf("webrtc: ERLE %.1f dB (2–8 s), %.1f dB after double talk, visitor lost %.1f dB", w.erle, w.erleAfter, w.nearLoss)
			if w.erle < 35 {
				t.Errorf("webrtc ERLE %.1f dB in 2–8 s, want ≥ 35", w.erle)
			}
		})
	}
}

// BenchmarkEcho prints, per library, the medians over echo delays of 20,
// 60 and 120 ms and three seeds (different speech and rooms) of: ERLE
// after 2 s of convergence (frames 2–8 s, resident alone; and 2–4 s
// alone), ERLE after double talk (15–18 s) and the visitor's loss in
// double talk (8–14 s). Times are from the first frame both libraries see.
func BenchmarkEcho(b *testing.B) {
	for _, lib := range libraries() {
		b.Run(string(lib), func(b *testing.B) {
			for range b.N {
				var erle, early, after, loss []float64
				for seed := uint64(1); seed <= 3; seed++ {
					src := newSource(seed)
					for _, d := range []time.Duration{20 * time.Millisecond, 60 * time.Millisecond, 120 * time.Millisecond} {
						sc := scenario{delay: d, seed: seed}
						r := measure(b, lib, sc, src.delayed(d))
						b.Logf("%s %s: ERLE %.1f dB (2–8 s), %.1f dB (2–4 s), %.1f dB after double talk; visitor lost %.1f dB", lib, sc, r.erle, r.erleEarly, r.erleAfter, r.nearLoss)
						erle, early, after, loss = append(erle, r.erle), append(early, r.erleEarly), append(after, r.erleAfter), append(loss, r.nearLoss)
					}
				}
				b.ReportMetric(median(erle), "dB-ERLE")
				b.ReportMetric(median(early), "dB-ERLE-2-4s")
				b.ReportMetric(median(after), "dB-ERLE-after-double-talk")
				b.ReportMetric(median(loss), "dB-visitor-loss")
			}
		})
	}
}

func median(x []float64) float64 {
	s := slices.Clone(x)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}
