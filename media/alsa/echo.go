package alsa

import (
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/doorbell/intercom/media"
)

// Canceller is the echo canceller between the door's speaker and its
// microphone; media/aec's Processor is the one the door uses.
type Canceller interface {
	// Far takes the reference for the microphone frame that follows.
	Far(pcm []int16) error
	// Near cleans a microphone frame in place.
	Near(pcm []int16) error
	// SetDelay says how long after its reference a sample's echo comes.
	SetDelay(d time.Duration)
}

// Echo joins one Speaker and the Microphone opened after it through a
// Canceller. The speaker hands it every period exactly as it writes it to
// the card (after the mixer, the playback gain and the limiter; silence
// when nobody talks), with the playback PCM's delay (snd_pcm_delay) just
// before; the microphone hands it every frame as it reads it (after the
// capture gain, before the encoder) with the capture PCM's delay.
//
// Echo aligns the two streams itself and gives the canceller each
// microphone frame together with the reference that sounded when it was
// captured, 10 ms early (echoMargin: the filter only models echo that comes
// after its reference, so a slightly wrong delay must not push the echo
// before it). It does not leave the alignment to the canceller's delay
// hint alone because the speaker's and the microphone's goroutines each
// hand over 20 ms at a time, in either order: a canceller that aligns by
// how much reference it holds sees that jitter by up to 30 ms, and every
// correction shifts the reference under a converged filter (measured on
// the simulated card: 1–8 dB of ERLE instead of 30–40 dB for some delays).
// Echo instead places every sample on the card's timeline: a speaker
// sample is heard at the time it was handed over plus the playback delay,
// a microphone sample was captured at the time it was read less the
// capture delay. The medians of the last second of each side's readings
// give the offset between the two streams, so a period boundary does not
// make it jitter; it is applied when it moves by more than echoSlack, so a
// USB card plugged in, a resampling plugin or an xrun that changes the
// device's delay is followed within about a second.
//
// Both sides are read against the monotonic clock; a card's clock drifts
// from it, but playback and capture on one card drift together, so the
// offset holds. (A microphone and a speaker on two cards drift apart by
// their clocks' difference, and the offset then moves by echoSlack every
// so often: at 100 ppm, every 50 s.)
//
// One microphone at a time: the daemon's stream opens one, and the
// canceller's state is that of one echo path.
type Echo struct {
	c   Canceller
	log *slog.Logger
	// now is the clock the delays are read against: the monotonic clock,
	// or a simulated card's.
	now func() time.Duration

	mu sync.Mutex // guards the reference history and the speaker's side
	// ring holds the latest reference samples; ringEnd is the speaker
	// position just past the newest (positions count samples handed over
	// since the Echo was made).
	ring    []int16
	ringEnd int64
	heard   delayMedian // when speaker position 0 is heard (card timeline)
	playDel delayMedian // the playback delay, for status
	// reopened is set when the speaker opened its device again: the new
	// device's timeline owes nothing to the old one's.
	reopened bool

	// The microphone's goroutine's.
	captured delayMedian // when microphone position 0 was captured
	capDel   delayMedian
	pos      int64 // microphone samples taken so far
	offset   int64 // speaker position heard as microphone position 0 is captured
	aligned  bool
	ref      []int16

	delay    atomic.Int64 // playback-to-capture delay (ns), -1 before the first frame
	shifts   atomic.Uint64
	errMu    sync.Mutex // guards lastErr
	lastErr  time.Time
	margin   int
	slack    int64 // echoSlack in samples; tests freeze the alignment
	hintSent bool
}

// Alignment constants: the reference comes echoMargin before its echo;
// the offset is moved when the measured one differs by more than echoSlack
// (half the margin, so the echo stays after its reference); echoHistory
// of reference is kept, more than any sound card's delay.
const (
	echoMargin  = 10 * time.Millisecond
	echoSlack   = 5 * time.Millisecond
	echoHistory = 2 * time.Second
)

// NewEcho wraps c; log reports a canceller that fails (the audio then goes
// on uncancelled).
func NewEcho(c Canceller, log *slog.Logger) *Echo {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	start := time.Now()
	e := &Echo{
		c: c, log: log, now: func() time.Duration { return time.Since(start) },
		ring: make([]int16, samples(echoHistory)), margin: samples(echoMargin),
		slack: int64(samples(echoSlack)),
	}
	e.delay.Store(-1)
	return e
}

// Delay is the playback-to-capture delay alsa-lib reports (the two PCMs'
// snd_pcm_delay), as last applied; -1 before the first frame.
func (e *Echo) Delay() time.Duration { return time.Duration(e.delay.Load()) }

// Shifts counts how often the alignment moved after the first.
func (e *Echo) Shifts() uint64 { return e.shifts.Load() }

func samples(d time.Duration) int { return int(d * media.SampleRate / time.Second) }
func span(n int64) time.Duration  { return time.Duration(n) * time.Second / media.SampleRate }

// speakerOpened is called by the speaker's goroutine each time it opens
// its device: the readings of the device before say nothing of this one.
func (e *Echo) speakerOpened() {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.heard, e.playDel = delayMedian{}, delayMedian{}
	e.reopened = true
}

// microphoneOpened is called by the microphone's goroutine before its
// first frame: a new capture PCM (the stream opens one per call) is on a
// timeline of its own, and the readings of the last call would misplace
// this one's first half second. The canceller's filter stays: the echo
// path has not moved.
func (e *Echo) microphoneOpened() {
	e.captured, e.capDel = delayMedian{}, delayMedian{}
	e.aligned = false
}

// far is called by the speaker's goroutine with the period it is about to
// write and the playback PCM's delay measured just before.
func (e *Echo) far(pcm []int16, delay time.Duration) {
	t := e.now()
	e.mu.Lock()
	defer e.mu.Unlock()
	e.heard.add(t + delay - span(e.ringEnd))
	e.playDel.add(delay)
	for _, v := range pcm {
		e.ring[e.ringEnd%int64(len(e.ring))] = v
		e.ringEnd++
	}
}

// near is called by the microphone's goroutine with a frame just read and
// how long ago its first sample was captured.
func (e *Echo) near(pcm []int16, delay time.Duration) {
	t := e.now()
	e.captured.add(t - delay - span(e.pos))
	e.capDel.add(delay)
	if cap(e.ref) < len(pcm) {
		e.ref = make([]int16, len(pcm))
	}
	ref := e.ref[:len(pcm)]

	e.mu.Lock()
	if e.reopened {
		e.aligned, e.reopened = false, false
	}
	if e.heard.n > 0 {
		// Microphone position p was captured when speaker position
		// p+offset was heard.
		off := int64(samples(e.captured.median-e.heard.median)) + int64(e.margin)
		if !e.aligned || abs64(off-e.offset) > e.slack {
			if e.aligned {
				e.shifts.Add(1)
			}
			e.offset, e.aligned = off, true
		}
		e.delay.Store(int64(e.playDel.median + e.capDel.median))
	}
	// Copy the reference, silence where the speaker had not yet handed it
	// over or it is older than the history (no speaker running).
	start := e.pos + e.offset
	for i := range ref {
		p := start + int64(i)
		if !e.aligned || p < 0 || p >= e.ringEnd || p < e.ringEnd-int64(len(e.ring)) {
			ref[i] = 0
			continue
		}
		ref[i] = e.ring[p%int64(len(e.ring))]
	}
	e.mu.Unlock()
	e.pos += int64(len(pcm))

	if !e.hintSent {
		e.c.SetDelay(echoMargin)
		e.hintSent = true
	}
	if err := e.c.Far(ref); err != nil {
		e.report("far", err)
	}
	if err := e.c.Near(pcm); err != nil {
		e.report("near", err)
	}
}

func abs64(v int64) int64 {
	if v < 0 {
		return -v
	}
	return v
}

func (e *Echo) report(side string, err error) {
	e.errMu.Lock()
	defer e.errMu.Unlock()
	if time.Since(e.lastErr) < time.Minute {
		return
	}
	e.lastErr = time.Now()
	e.log.Warn("echo canceller failed; audio passes uncancelled", "side", side, "err", err)
}

// delayWindow is how many readings a median covers (one second of 20 ms
// frames), and delayEvery how often it is recomputed.
const (
	delayWindow = int(time.Second / media.AudioFrame)
	delayEvery  = 5
)

// delayMedian is the median of the last delayWindow readings, recomputed
// every delayEvery readings and at the first.
type delayMedian struct {
	ring   [delayWindow]time.Duration
	n      int // readings so far
	median time.Duration
	sorted []time.Duration
}

func (m *delayMedian) add(d time.Duration) {
	m.ring[m.n%delayWindow] = d
	m.n++
	if m.n > 1 && m.n%delayEvery != 0 {
		return
	}
	m.sorted = append(m.sorted[:0], m.ring[:min(m.n, delayWindow)]...)
	slices.Sort(m.sorted)
	m.median = m.sorted[len(m.sorted)/2]
}
