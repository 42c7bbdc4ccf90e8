package alsa

import (
	"context"
	"sync"
	"time"

	"github.com/doorbell/intercom/media"
	"github.com/doorbell/intercom/media/aec/aectest"
)

// simCard is a sound card for the echo tests, with the one thing alsa-lib's
// null plugin lacks: a clock that playback and capture share, so that what
// the microphone hears is the echo of what the speaker played at that
// moment. It has a playback buffer of PlaybackLatency that drains one
// period per tick, an echo path from what was played to what is captured,
// and a capture buffer that fills one period per tick; both sides report
// snd_pcm_delay's meaning (buffered audio plus each side's fixed latency,
// as a USB card's or a resampling plugin's FIFO would add). The clock
// ticks only when the speaker's writer waits for room and the microphone's
// reader waits for audio, so neither ever under- or overruns and a run is
// as fast as the CPU allows, yet every sample is where a real card would
// have put it.
type simCard struct {
	period int // samples per tick

	mu   sync.Mutex
	cond *sync.Cond
	now  int64 // card time, in samples

	queue     []int16 // written, not yet played
	bufCap    int
	playLat   int       // samples from leaving the buffer to the cone
	heard     []float64 // what the speaker sounded, by card time (full scale 1)
	capLat    int       // samples from the microphone to the capture buffer
	captured  []int16   // in the capture buffer
	raw       []int16   // every sample read, in order: what the canceller got
	taps      []aectest.Tap
	near      []float64 // the visitor and the street, by card time
	wantWrite bool
	wantRead  bool
	capOpen   bool  // a microphone has the capture PCM open
	runUntil  int64 // without one, the speaker drives the clock up to here

	// onTick runs under the lock at every tick with the card time; tests
	// feed the resident's voice from it and change latencies.
	onTick func(now int64)
}

func newSimCard(taps []aectest.Tap, near []float64, playLat, capLat time.Duration) *simCard {
	c := &simCard{
		period: media.AudioFrameSamples / 2, bufCap: at(PlaybackLatency),
		playLat: at(playLat), capLat: at(capLat), taps: taps, near: near,
	}
	c.cond = sync.NewCond(&c.mu)
	return c
}

func at(d time.Duration) int { return int(d * media.SampleRate / time.Second) }

// tick advances the card by one period: the buffer plays a period (silence
// where it ran dry), the microphone captures one.
func (c *simCard) tick() {
	if c.onTick != nil {
		c.onTick(c.now)
	}
	first := int(c.now) + c.playLat
	if end := first + c.period; len(c.heard) < end {
		c.heard = append(c.heard, make([]float64, end-len(c.heard))...)
	}
	played := min(c.period, len(c.queue))
	for i, v := range c.queue[:played] {
		c.heard[first+i] = float64(v) / 32768
	}
	clear(c.heard[first+played : first+c.period])
	c.queue = c.queue[played:]
	// The echo of one period, tap by tap over the whole period (fewer
	// memory accesses: the race detector checks each one).
	var acc [media.AudioFrameSamples / 2]float64
	t0 := int(c.now) - c.capLat
	for _, tp := range c.taps {
		lo := t0 - tp.At
		for i := range acc[:c.period] {
			if k := lo + i; k >= 0 && k < len(c.heard) {
				acc[i] += tp.Gain * c.heard[k]
			}
		}
	}
	for i, x := range acc[:c.period] {
		t := t0 + i
		if t < 0 {
			x = 0
		} else if t < len(c.near) {
			x += c.near[t]
		}
		if c.capOpen {
			c.captured = append(c.captured, int16(max(-32768, min(32767, x*32768))))
		}
	}
	c.now += int64(c.period)
	c.wantWrite, c.wantRead = false, false
	c.cond.Broadcast()
}

// wait blocks the calling side until the clock moved (ticking it if the
// other side waits too) or ctx is done.
func (c *simCard) wait(ctx context.Context, want *bool) error {
	*want = true
	// Without a microphone (between calls) the speaker alone drives the
	// clock, as a card's playback runs on while capture is closed, up to
	// where the test opens the next one.
	if c.wantWrite && (c.wantRead || (!c.capOpen && c.now < c.runUntil)) {
		c.tick()
		return nil
	}
	stop := context.AfterFunc(ctx, func() {
		c.mu.Lock()
		c.cond.Broadcast()
		c.mu.Unlock()
	})
	defer stop()
	for *want && ctx.Err() == nil {
		c.cond.Wait()
	}
	return ctx.Err()
}

// playback and capture are the card's two PCMs.
func (c *simCard) playback() device { return simPlayback{c} }

// capture opens the capture PCM afresh: empty, capturing from now.
func (c *simCard) capture() device {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.capOpen, c.captured = true, nil
	return simCapture{c}
}

type simPlayback struct{ c *simCard }

func (p simPlayback) transfer(ctx context.Context, buf []int16) error {
	c := p.c
	c.mu.Lock()
	defer c.mu.Unlock()
	for len(buf) > 0 {
		if n := min(len(buf), c.bufCap-len(c.queue)); n > 0 {
			c.queue = append(c.queue, buf[:n]...)
			buf = buf[n:]
			continue
		}
		if err := c.wait(ctx, &c.wantWrite); err != nil {
			return err
		}
	}
	return nil
}

func (p simPlayback) delay() time.Duration {
	p.c.mu.Lock()
	defer p.c.mu.Unlock()
	return durationOf(len(p.c.queue) + p.c.playLat)
}

func (p simPlayback) close() error { return nil }

type simCapture struct{ c *simCard }

func (r simCapture) transfer(ctx context.Context, buf []int16) error {
	c := r.c
	c.mu.Lock()
	defer c.mu.Unlock()
	for len(buf) > 0 {
		if n := copy(buf, c.captured); n > 0 {
			c.raw = append(c.raw, buf[:n]...)
			c.captured, buf = c.captured[n:], buf[n:]
			continue
		}
		if err := c.wait(ctx, &c.wantRead); err != nil {
			return err
		}
	}
	return nil
}

func (r simCapture) delay() time.Duration {
	r.c.mu.Lock()
	defer r.c.mu.Unlock()
	return durationOf(len(r.c.captured) + r.c.capLat)
}

func (r simCapture) close() error {
	c := r.c
	c.mu.Lock()
	defer c.mu.Unlock()
	c.capOpen, c.captured = false, nil
	if c.wantWrite && c.now < c.runUntil {
		c.tick() // the speaker may be waiting for the clock
	}
	return nil
}

func durationOf(n int) time.Duration { return time.Duration(n) * time.Second / media.SampleRate }
