package media

import (
	"math"
	"sync"
	"time"
)

// Playout is the adaptive jitter buffer between the network and the
// speaker: the receiver writes decoded PCM whenever packets arrive
// (WritePCM, never blocking), the sound card's writer takes one period at
// a time (Read). It holds back just enough audio to ride out the network's
// jitter, and learns how much that is as the call goes:
//   - At the start, and after it ran dry, it plays silence until it holds
//     its target (prefill), so that a late packet costs one short pause
//     rather than a stutter on every packet that follows.
//   - Running dry while playing raises the target by AdaptStep, up to the
//     bound less one period.
//   - When for a whole AdaptWindow the buffer never ran dry and always
//     had audio left after a period (more than a margin), it holds more
//     than the network needs: it lowers the target by half a
//     step (to one period at least) and drops the surplus it measured, at
//     most a step a window, from a quiet period (a pause in speech), where
//     it cannot be heard.
//   - When jitter or a sender whose clock runs faster than the sound
//     card's fills it beyond its bound, the oldest audio is dropped down
//     to the target.
//
// The delay it adds therefore follows the network: one period or two on a
// clean link, up to the bound on a jittery one, and back down when the
// jitter goes. Nothing is time-stretched (no library here does it); drops
// wait for quiet periods. Safe for concurrent use.
type Playout struct {
	max             int // samples: beyond this, drop to target
	floor, ceiling  int // the target's range
	target, initial int // samples: prefill level now, and at the start
	mu              sync.Mutex
	buf             []int16 // ring storage, len == capacity
	r, n            int     // read position, samples held
	playing         bool    // false: prefilling
	windowRead      int     // samples read in this adaptation window
	windowLow       int     // lowest level before a read in it
	windowDry       bool    // an underflow in it
	surplus         int     // samples to drop at the next quiet period
	// dry is the last underflow, kept until audio is written again, so
	// that SenderPaused can take it back: raised is what it added to the
	// target, windowDry the window's dry mark before it.
	dry struct {
		pending   bool
		raised    int
		windowDry bool
	}
	stats PlayoutStats
}

// Adaptation of the Playout's target (see Playout).
const (
	// AdaptStep is how much the target rises when the buffer runs dry,
	// and the most it drops per window.
	AdaptStep = 20 * time.Millisecond
	// AdaptWindow is how long the buffer must have held more than it
	// needed before it lets the surplus go.
	AdaptWindow = 2 * time.Second
	// adaptMargin is what it keeps above the lowest level it saw: the
	// jitter of the sound card's own reads.
	adaptMargin = 10 * time.Millisecond
	// quietPeak is the loudest sample of a period the buffer may drop
	// from: -30 dBFS, below speech, above a resident's room noise after
	// their browser's noise suppression.
	quietPeak = 1 << 10
)

// PlayoutStats counts what the buffer did.
type PlayoutStats struct {
	Written        uint64 `json:"written"`         // samples
	Played         uint64 `json:"played"`          // samples
	Dropped        uint64 `json:"dropped"`         // samples dropped because the buffer exceeded the bound
	DropEvents     uint64 `json:"drop_events"`     // times the bound was hit
	Underflows     uint64 `json:"underflows"`      // times it ran dry while playing, the sender's pauses not counted
	Pauses         uint64 `json:"pauses"`          // times it ran dry because the sender paused (SenderPaused)
	SilenceSamples uint64 `json:"silence_samples"` // samples of padding played, prefill included
	// Trimmed counts samples let go from quiet periods because the buffer
	// held more than the network needed.
	Trimmed  uint64        `json:"trimmed"`
	Level    time.Duration `json:"level_ns"`
	MaxLevel time.Duration `json:"max_level_ns"`
	// Target is the jitter reserve the buffer aims for now (the largest
	// of a mixer's inputs); Bound the most it ever holds.
	Target time.Duration `json:"target_ns"`
	Bound  time.Duration `json:"bound_ns"`
}

// NewPlayout returns a buffer that starts aiming for target of jitter
// reserve, adapts it between one period and bound less one period, and
// drops back to it once it holds more than bound (both at SampleRate,
// mono).
func NewPlayout(target, bound time.Duration) *Playout {
	t := samples(target)
	m := max(samples(bound), t+AudioFrameSamples)
	floor := min(t, AudioFrameSamples)
	return &Playout{max: m, floor: floor, ceiling: max(t, m-AudioFrameSamples), target: t, initial: t,
		buf: make([]int16, m+SampleRate/10), windowLow: math.MaxInt,
		stats: PlayoutStats{Target: target, Bound: durationOf(m)}}
}

func samples(d time.Duration) int    { return int(d * SampleRate / time.Second) }
func durationOf(n int) time.Duration { return time.Duration(n) * time.Second / SampleRate }

// WritePCM implements PCMSink: it appends pcm and enforces the bound.
func (p *Playout) WritePCM(pcm []int16) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.dry.pending = false
	if len(pcm) > len(p.buf) {
		pcm = pcm[len(pcm)-len(p.buf):]
	}
	if free := len(p.buf) - p.n; len(pcm) > free {
		p.drop(len(pcm) - free)
	}
	w := (p.r + p.n) % len(p.buf)
	c := copy(p.buf[w:], pcm)
	copy(p.buf, pcm[c:])
	p.n += len(pcm)
	p.stats.Written += uint64(len(pcm))
	if p.n > p.max {
		p.stats.DropEvents++
		p.drop(p.n - p.target)
	}
	p.stats.MaxLevel = max(p.stats.MaxLevel, durationOf(p.n))
}

func (p *Playout) drop(k int) {
	k = min(k, p.n)
	p.r = (p.r + k) % len(p.buf)
	p.n -= k
	p.stats.Dropped += uint64(k)
}

// Read fills out with the oldest audio held, padding with silence when
// there is not enough or while prefilling, and reports how many samples
// were real audio.
func (p *Playout) Read(out []int16) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.playing {
		if p.n < p.target || p.n == 0 {
			clear(out)
			p.stats.SilenceSamples += uint64(len(out))
			return 0
		}
		p.playing = true
		p.windowRead, p.windowLow, p.windowDry = 0, math.MaxInt, false
	}
	if p.surplus > 0 && p.n >= len(out)+p.floor && p.quiet(len(out)) {
		// A pause: let the surplus go here, a period at most.
		k := min(p.surplus, len(out))
		p.r = (p.r + k) % len(p.buf)
		p.n -= k
		p.surplus -= k
		p.stats.Trimmed += uint64(k)
	}
	k := min(len(out), p.n)
	c := copy(out[:k], p.buf[p.r:min(p.r+k, len(p.buf))])
	copy(out[c:k], p.buf)
	p.r = (p.r + k) % len(p.buf)
	p.n -= k
	clear(out[k:])
	p.stats.Played += uint64(k)
	if k < len(out) {
		// Dry: wait for the (raised) target before playing again.
		p.stats.SilenceSamples += uint64(len(out) - k)
		p.stats.Underflows++
		raised := min(p.ceiling, p.target+samples(AdaptStep))
		p.dry.pending, p.dry.raised, p.dry.windowDry = true, raised-p.target, p.windowDry
		p.playing, p.windowDry, p.surplus = false, true, 0
		p.target = raised
	} else {
		// What is left after the period: the slack the network's
		// jitter has not needed.
		p.windowLow = min(p.windowLow, p.n)
	}
	p.windowRead += len(out)
	if p.windowRead >= samples(AdaptWindow) {
		p.adapt()
	}
	return k
}

// SenderPaused tells the buffer that the sender stopped sending on
// purpose before the audio it writes next (Opus DTX in a pause of speech:
// no packet was lost, the RTP timestamps jumped), or that the receiver
// chose not to play it (an inaudible voice). Running dry since the last
// audio was then silence, not the network's jitter: the target goes back
// to what it was, and it does not count as an underflow. Without this, a
// resident's every pause raised the door's speaker delay by a step.
func (p *Playout) SenderPaused() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.dry.pending {
		return
	}
	p.dry.pending = false
	p.target -= p.dry.raised
	p.windowDry = p.dry.windowDry
	p.stats.Underflows--
	p.stats.Pauses++
}

// adapt ends an adaptation window: a window without underflow whose
// lowest level stayed above the margin shows a reserve the network did
// not need.
func (p *Playout) adapt() {
	if !p.windowDry && p.windowLow != math.MaxInt {
		if spare := p.windowLow - samples(adaptMargin); spare > 0 {
			p.surplus = min(spare, samples(AdaptStep))
			p.target = max(p.floor, p.target-samples(AdaptStep)/2)
		}
	}
	p.windowRead, p.windowLow, p.windowDry = 0, math.MaxInt, false
}

// quiet reports whether the next k samples held are a pause: no sample
// louder than quietPeak.
func (p *Playout) quiet(k int) bool {
	for i := range min(k, p.n) {
		v := p.buf[(p.r+i)%len(p.buf)]
		if v > quietPeak || v < -quietPeak {
			return false
		}
	}
	return true
}

// Level is the audio held now, the delay the buffer adds.
func (p *Playout) Level() time.Duration {
	p.mu.Lock()
	defer p.mu.Unlock()
	return durationOf(p.n)
}

// Stats returns the counters.
func (p *Playout) Stats() PlayoutStats {
	p.mu.Lock()
	defer p.mu.Unlock()
	s := p.stats
	s.Level, s.Target = durationOf(p.n), durationOf(p.target)
	return s
}

// Reset empties the buffer (the sound card was reopened): it prefills
// again, to the target it had learnt.
func (p *Playout) Reset() {
	p.mu.Lock()
	p.r, p.n, p.playing, p.surplus = 0, 0, false, 0
	p.dry.pending = false
	p.mu.Unlock()
}

// ApplyGain scales pcm in place by gain (linear), saturating.
func ApplyGain(pcm []int16, gain float64) {
	if gain == 1 {
		return
	}
	for i, v := range pcm {
		f := float64(v) * gain
		switch {
		case f > 32767:
			pcm[i] = 32767
		case f < -32768:
			pcm[i] = -32768
		default:
			pcm[i] = int16(f)
		}
	}
}

// DBToGain converts decibels to a linear amplitude factor.
func DBToGain(db float64) float64 {
	return math.Pow(10, db/20)
}
