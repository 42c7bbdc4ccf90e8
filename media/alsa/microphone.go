package alsa

import (
	"context"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/doorbell/intercom/media"
)

// CaptureLatency is the capture buffer: long enough to ride out a busy
// moment of the encoder's goroutine, short enough that what the resident
// hears is not late.
const CaptureLatency = 100 * time.Millisecond

// Microphone reads 20 ms frames of 48 kHz mono from an ALSA PCM. It is a
// media.AudioSource; gain and mute apply to what it delivers.
type Microphone struct {
	dev    device
	echo   *Echo // nil: no canceller
	opened bool  // the Echo was told of this microphone
	buf    []int16
	gain   atomic.Uint64 // math.Float64bits of the linear gain
	mute   atomic.Bool
}

// OpenMicrophone opens the capture PCM name (e.g. "default", "hw:1,0",
// "dsnoop:…") with gain in dB. With echo, every frame read is cleaned of
// the speaker's echo (and, as the canceller is set up, of noise) before it
// is delivered.
func OpenMicrophone(name string, gainDB float64, mute bool, echo *Echo) (*Microphone, error) {
	p, err := openPCM(name, true, CaptureLatency)
	if err != nil {
		return nil, err
	}
	return newMicrophone(p, gainDB, mute, echo), nil
}

func newMicrophone(dev device, gainDB float64, mute bool, echo *Echo) *Microphone {
	m := &Microphone{dev: dev, echo: echo, buf: make([]int16, media.AudioFrameSamples)}
	m.SetGain(gainDB)
	m.SetMute(mute)
	return m
}

// SetGain sets the gain in dB.
func (m *Microphone) SetGain(db float64) { m.gain.Store(floatBits(media.DBToGain(db))) }

// SetMute silences (true) or restores the microphone.
func (m *Microphone) SetMute(on bool) { m.mute.Store(on) }

// ReadAudio implements media.AudioSource: it blocks until 20 ms have been
// captured. A muted microphone still reads (so the capture buffer never
// overruns) and delivers silence.
func (m *Microphone) ReadAudio(ctx context.Context) ([]int16, error) {
	if err := m.dev.transfer(ctx, m.buf); err != nil {
		return nil, fmt.Errorf("read microphone: %w", err)
	}
	m.process()
	return m.buf, nil
}

// process turns the frame just read into what the encoder gets.
func (m *Microphone) process() {
	if m.mute.Load() {
		clear(m.buf)
		return
	}
	// The capture gain comes first: it stands for the preamp an installer
	// tunes with hwtest's meter, so the canceller, the noise suppressor
	// and the gain control see the level that was tuned.
	media.ApplyGain(m.buf, floatFrom(m.gain.Load()))
	if m.echo != nil {
		if !m.opened {
			m.echo.microphoneOpened()
			m.opened = true
		}
		// What the PCM still holds was captured after this frame, which
		// is a frame long: its first sample is that much older.
		m.echo.near(m.buf, m.dev.delay()+media.AudioFrame)
	}
}

// Xruns counts overruns recovered from (audio was lost).
func (m *Microphone) Xruns() uint64 {
	p, ok := m.dev.(*pcm)
	if !ok {
		return 0
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.xruns
}

// Close closes the PCM.
func (m *Microphone) Close() error { return m.dev.close() }
