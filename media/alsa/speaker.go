package alsa

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"sync"
	"sync/atomic"
	"time"

	"github.com/doorbell/intercom/media"
)

// Speaker plays the residents' voices on an ALSA PCM. Each resident's
// stream writes to an input of its own (NewInput), a bounded
// media.Playout inside a media.Mixer; Run owns the device and takes one
// 20 ms period at a time from the mixer, silence where nothing came, so
// the card runs continuously and the delay stays what the two bounded
// buffers allow. Each period goes through the playback gain and a
// media.Limiter, then to the echo canceller's reference (Echo) and the
// card.
type Speaker struct {
	name  string
	mixer *media.Mixer
	echo  *Echo // nil: no canceller
	log   *slog.Logger
	gain  atomic.Uint64
	mute  atomic.Bool
	// open opens the playback device: alsa-lib's, or a test's card.
	open func() (device, error)

	mu  sync.Mutex
	dev device // while Run has it open

	// tap, if set, sees every period as it is handed to the device.
	tap func(pcm []int16, handed time.Time, delay time.Duration)
}

// Tap calls f with every period just before it is written to the device:
// the samples, when they were handed over and the device's delay then
// (snd_pcm_delay: how long until the first of them is heard). It is for
// measurements (mouth-to-ear latency) and must be set before Run; f runs
// on the speaker's goroutine and must be quick.
func (s *Speaker) Tap(f func(pcm []int16, handed time.Time, delay time.Duration)) { s.tap = f }

// Playback buffering: the card's buffer (PlaybackLatency) plus each
// input's adaptive playout buffer, which starts at PlayoutTarget of
// jitter reserve, adapts it to the network (media.Playout) and drops back
// to it whenever it exceeds PlayoutBound.
const (
	PlaybackLatency = 60 * time.Millisecond
	PlayoutTarget   = 40 * time.Millisecond
	PlayoutBound    = 120 * time.Millisecond
)

// NewSpeaker prepares a speaker on the playback PCM name; the device is
// opened by Run. With echo, every period written to the card is also the
// echo canceller's reference.
func NewSpeaker(name string, gainDB float64, mute bool, echo *Echo, log *slog.Logger) *Speaker {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Speaker{name: name, mixer: media.NewMixer(PlayoutTarget, PlayoutBound), echo: echo, log: log}
	s.open = func() (device, error) { return openPCM(name, false, PlaybackLatency) }
	s.SetGain(gainDB)
	s.SetMute(mute)
	return s
}

// SetGain sets the gain in dB.
func (s *Speaker) SetGain(db float64) { s.gain.Store(floatBits(media.DBToGain(db))) }

// SetMute silences (true) or restores the speaker.
func (s *Speaker) SetMute(on bool) { s.mute.Store(on) }

// NewInput adds an input for one resident's stream; the stream's reader
// closes it when the stream ends.
func (s *Speaker) NewInput() media.PCMInput { return s.mixer.NewInput() }

// Stats returns the playout buffers' counters, added up.
func (s *Speaker) Stats() media.PlayoutStats { return s.mixer.Stats() }

// Delay is the playback path's delay now: audio waiting in the fullest
// playout buffer plus what the card still has to play (the limiter's
// 2 ms lookahead aside).
func (s *Speaker) Delay() time.Duration {
	s.mu.Lock()
	dev := s.dev
	s.mu.Unlock()
	d := s.mixer.Level()
	if dev != nil {
		d += dev.delay()
	}
	return d
}

// Run opens the device and plays until ctx is done. A device that fails
// (unplugged USB speaker) is reopened with backoff; audio meanwhile is
// dropped by the bounded buffer, never queued.
func (s *Speaker) Run(ctx context.Context) error {
	backoff := 500 * time.Millisecond
	for ctx.Err() == nil {
		err := s.play(ctx)
		if ctx.Err() != nil {
			return nil
		}
		s.log.Warn("speaker failed; reopening", "device", s.name, "err", err, "in", backoff)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 10*time.Second)
	}
	return nil
}

func (s *Speaker) play(ctx context.Context) error {
	dev, err := s.open()
	if err != nil {
		return err
	}
	s.mu.Lock()
	s.dev = dev
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		s.dev = nil
		s.mu.Unlock()
		_ = dev.close()
	}()
	s.mixer.Reset()
	if s.echo != nil {
		s.echo.speakerOpened()
	}
	// The playback gain is applied inside the limiter, so a gain that
	// would push the resident past full scale is limited, not clipped.
	limit := media.NewLimiter(media.LimiterCeilingDBFS, media.LimiterLookahead, media.LimiterRelease)
	buf := make([]int16, media.AudioFrameSamples)
	for {
		s.period(buf, limit, dev)
		if s.tap != nil {
			s.tap(buf, time.Now(), dev.delay())
		}
		if err := dev.transfer(ctx, buf); err != nil {
			if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
				return err
			}
			return fmt.Errorf("play: %w", err)
		}
	}
}

// period fills buf with the next period for dev: the mix, through the
// playback gain and the limiter, handed to the echo canceller.
func (s *Speaker) period(buf []int16, limit *media.Limiter, dev device) {
	s.mixer.Read(buf)
	gain := floatFrom(s.gain.Load())
	if s.mute.Load() {
		gain = 0
	}
	limit.Process(buf, gain)
	if s.echo != nil {
		// The reference is exactly what the card is given, taken with
		// the card's delay before it: a sample handed over now is heard
		// that much later.
		s.echo.far(buf, dev.delay())
	}
}

// Playback is a plain blocking writer on an ALSA PCM, for installer tests
// (hwtest) that play a recording or a tone.
type Playback struct{ pcm *pcm }

// OpenPlayback opens the playback PCM name.
func OpenPlayback(name string) (*Playback, error) {
	p, err := openPCM(name, false, PlaybackLatency)
	if err != nil {
		return nil, err
	}
	return &Playback{pcm: p}, nil
}

// Write plays pcm (48 kHz mono), blocking until the card took it.
func (p *Playback) Write(ctx context.Context, pcm []int16) error {
	return p.pcm.transfer(ctx, pcm)
}

// Drain waits until everything written was played, then closes.
func (p *Playback) Close() error {
	p.pcm.drain()
	return p.pcm.close()
}

func floatBits(f float64) uint64 { return math.Float64bits(f) }
func floatFrom(u uint64) float64 { return math.Float64frombits(u) }
