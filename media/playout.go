package media

import (
	"math"
	"sync"
	"time"
)

// Playout is the bounded buffer between the network and the speaker: the
// receiver writes decoded PCM whenever packets arrive (WritePCM, never
// blocking), the sound card's writer takes one period at a time (Read). It
// keeps the added delay bounded for as long as a call lasts: when jitter or
// a sender whose clock runs faster than the sound card's fills it beyond
// Max, the oldest audio is dropped down to Target. When it runs dry, Read
// pads with silence and nothing is queued for later, so an underflow never
// adds delay either. Safe for concurrent use.
type Playout struct {
	target, max int // samples

	mu    sync.Mutex
	buf   []int16 // ring storage, len == capacity
	r, n  int     // read position, samples held
	stats PlayoutStats
}

// PlayoutStats counts what the buffer did.
type PlayoutStats struct {
	Written        uint64        `json:"written"`         // samples
	Played         uint64        `json:"played"`          // samples
	Dropped        uint64        `json:"dropped"`         // samples dropped because the buffer exceeded the bound
	DropEvents     uint64        `json:"drop_events"`     // times the bound was hit
	Underflows     uint64        `json:"underflows"`      // reads that had to pad with silence
	SilenceSamples uint64        `json:"silence_samples"` // samples of padding played
	Level          time.Duration `json:"level_ns"`
	MaxLevel       time.Duration `json:"max_level_ns"`
	Target         time.Duration `json:"target_ns"`
	Bound          time.Duration `json:"bound_ns"`
}

// NewPlayout returns a buffer that drops back to target once it holds more
// than bound (both at SampleRate, mono).
func NewPlayout(target, bound time.Duration) *Playout {
	t := samples(target)
	m := max(samples(bound), t+AudioFrameSamples)
	return &Playout{target: t, max: m, buf: make([]int16, m+SampleRate/10),
		stats: PlayoutStats{Target: target, Bound: durationOf(m)}}
}

func samples(d time.Duration) int    { return int(d * SampleRate / time.Second) }
func durationOf(n int) time.Duration { return time.Duration(n) * time.Second / SampleRate }

// WritePCM implements PCMSink: it appends pcm and enforces the bound.
func (p *Playout) WritePCM(pcm []int16) {
	p.mu.Lock()
	defer p.mu.Unlock()
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
// there is not enough, and reports how many samples were real audio.
func (p *Playout) Read(out []int16) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	k := min(len(out), p.n)
	c := copy(out[:k], p.buf[p.r:min(p.r+k, len(p.buf))])
	copy(out[c:k], p.buf)
	p.r = (p.r + k) % len(p.buf)
	p.n -= k
	clear(out[k:])
	p.stats.Played += uint64(k)
	if k < len(out) {
		p.stats.SilenceSamples += uint64(len(out) - k)
		if k > 0 || p.stats.Written > 0 {
			p.stats.Underflows++
		}
	}
	return k
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
	s.Level = durationOf(p.n)
	return s
}

// Reset empties the buffer (a call ended).
func (p *Playout) Reset() {
	p.mu.Lock()
	p.r, p.n = 0, 0
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
