package media

import (
	"math"
	"time"
)

// Limiter keeps the door's speaker under a ceiling: it applies the
// playback gain and then, where the result would pass the ceiling, turns
// the gain down smoothly instead of clipping. A loud resident (or a
// playback gain set high for a quiet one) would otherwise square off the
// waveform in the DAC or overdrive the amplifier: harsh to the visitor, and
// audio the echo canceller cannot model, since its filter is linear.
//
// It is a lookahead peak limiter. The signal is delayed by the lookahead
// (2 ms), and the gain each sample needs to stay under the ceiling is held
// at its minimum over that window, so the gain has already come down when
// a peak leaves the delay line; a moving average over the same window
// turns each step into a ramp (the attack); gain recovers exponentially
// (the release). Because the average only mixes gains held from the
// window around the peak, no sample leaves above the ceiling. Used by one
// goroutine (the speaker's).
type Limiter struct {
	ceiling float64 // linear amplitude in sample units
	release float64 // per-sample share of the way back up
	look    int     // lookahead in samples; the window is look+1

	delay []float64 // the last look samples, after gain
	held  []float64 // the last look+1 held gains, for the average
	// The sliding minimum of needed gains over the window: a monotonic
	// queue of (sample index, gain), increasing gains from the front.
	qIdx        []int64
	qVal        []float64
	qHead, qLen int

	gain float64 // held gain after release smoothing
	n    int64   // samples processed
}

// Limiter defaults: the ceiling leaves a decibel of headroom below full
// scale (sample-rate converters and DACs overshoot a little between
// samples); 2 ms of lookahead is long enough for a smooth attack and
// short enough not to matter to a conversation; 100 ms of release keeps the
// gain from pumping within a syllable.
const (
	LimiterCeilingDBFS = -1
	LimiterLookahead   = 2 * time.Millisecond
	LimiterRelease     = 100 * time.Millisecond
)

// NewLimiter returns a limiter with the ceiling in dBFS, the lookahead and
// the release time (time constant) at SampleRate.
func NewLimiter(ceilingDBFS float64, lookahead, release time.Duration) *Limiter {
	look := max(samples(lookahead), 1)
	l := &Limiter{
		ceiling: 32768 * DBToGain(ceilingDBFS),
		release: 1 - math.Exp(-1/(release.Seconds()*SampleRate)),
		look:    look,
		delay:   make([]float64, look),
		held:    make([]float64, look+1),
		qIdx:    make([]int64, look+1),
		qVal:    make([]float64, look+1),
	}
	l.Reset()
	return l
}

// Reset forgets the signal (the device was reopened): unity gain, silence
// in the delay line.
func (l *Limiter) Reset() {
	clear(l.delay)
	for i := range l.held {
		l.held[i] = 1
	}
	l.qHead, l.qLen, l.gain, l.n = 0, 0, 1, 0
}

// Delay is how much later a sample leaves than it entered.
func (l *Limiter) Delay() time.Duration { return durationOf(l.look) }

// Process applies gain (linear) to pcm and limits it, in place; the output
// is the input delayed by the lookahead. It reports the smallest gain
// reduction applied (1: none).
func (l *Limiter) Process(pcm []int16, gain float64) float64 {
	w := len(l.held)
	var sum float64
	for _, g := range l.held {
		sum += g // recomputed per call so rounding cannot drift
	}
	least := 1.0
	for i, v := range pcm {
		x := float64(v) * gain
		need := 1.0
		if a := math.Abs(x); a > l.ceiling {
			need = l.ceiling / a
		}
		// Sliding minimum: drop larger gains from the back (they can
		// never be the minimum again), then what left the window.
		for l.qLen > 0 && l.qVal[(l.qHead+l.qLen-1)%w] >= need {
			l.qLen--
		}
		l.qIdx[(l.qHead+l.qLen)%w], l.qVal[(l.qHead+l.qLen)%w] = l.n, need
		l.qLen++
		for l.qIdx[l.qHead] <= l.n-int64(w) {
			l.qHead, l.qLen = (l.qHead+1)%w, l.qLen-1
		}
		hold := l.qVal[l.qHead]
		// Down at once (the average ramps it), up slowly; never above
		// the hold, so the guarantee of the window stands.
		if hold < l.gain {
			l.gain = hold
		} else {
			l.gain += (hold - l.gain) * l.release
		}
		slot := int(l.n % int64(w))
		sum += l.gain - l.held[slot]
		l.held[slot] = l.gain
		g := min(sum/float64(w), 1)
		least = min(least, g)

		d := int(l.n % int64(l.look))
		out := l.delay[d] * g
		l.delay[d] = x
		pcm[i] = int16(max(-32768, min(32767, math.Round(out))))
		l.n++
	}
	return least
}
