package aec

import (
	"fmt"
	"sync"
	"time"

	"github.com/doorbell/intercom/media"
)

// Library names one of the two echo cancellers this package binds.
type Library string

const (
	// WebRTC is WebRTC's AudioProcessing (webrtc-audio-processing 0.3):
	// AEC with nonlinear suppression, NS, digital AGC, high-pass.
	WebRTC Library = "webrtc"
	// Speex is speexdsp 1.2.1: the MDF echo canceller followed by
	// speex_preprocess (NS, AGC, residual echo suppression) and this
	// package's own high-pass.
	Speex Library = "speexdsp"
	// Default is the library the door uses; see the package comment for
	// the measurements it was chosen by.
	Default = Speex
)

// FrameSamples is one 10 ms frame at media.SampleRate, mono: the unit both
// libraries process. Far and Near take any whole number of them, so the
// door's 20 ms frames go in as they are.
const FrameSamples = media.SampleRate / 100

// Options configure a Processor. The zero value is every stage on, with
// the Default library and no delay hint.
type Options struct {
	Library Library
	// Installers whose hardware already cancels echo, or suppresses noise,
	// switch the matching stage off.
	NoEcho, NoNoise, NoGain, NoHighPass bool
	// Delay is the time from a frame being handed to Far to its echo
	// arriving in a frame handed to Near: the playback and capture delays
	// the sound card reports plus the acoustic path. SetDelay follows it.
	Delay time.Duration
	// Tail is the echo tail the Speex filter covers beyond Delay (room
	// reverberation and a wrong hint); 0 means 150 ms. WebRTC's extended
	// filter has its own fixed length.
	Tail time.Duration
	// Suppression is how hard WebRTC's nonlinear stage suppresses what
	// the linear filter left of the echo (Speex's residual suppressor has
	// one setting).
	Suppression Suppression
	// DelayAgnostic lets WebRTC's canceller estimate the delay itself
	// instead of trusting Delay.
	DelayAgnostic bool
}

// Suppression is a level of WebRTC's residual echo suppression: more
// removes more echo and more of the visitor's voice while both talk.
type Suppression int

const (
	Moderate Suppression = iota // WebRTC's default
	Low                         // keeps more of the visitor in double talk
	High
)

// engine is one library behind the Processor; calls come with whole 10 ms
// frames and under the Processor's lock.
type engine interface {
	far(pcm []int16) error
	near(pcm []int16, delay time.Duration) error
	close()
}

// Processor cleans the door's microphone of the speaker's echo, with noise
// suppression, gain control and a high-pass filter. Far and Near may be
// called from different goroutines (the speaker's and the microphone's):
// both libraries keep state that the two directions share, so one lock
// orders them.
type Processor struct {
	mu    sync.Mutex
	eng   engine
	delay time.Duration
}

// New builds a Processor for 48 kHz mono 16-bit audio.
func New(opts Options) (*Processor, error) {
	lib := opts.Library
	if lib == "" {
		lib = Default
	}
	var (
		eng engine
		err error
	)
	switch lib {
	case WebRTC:
		eng, err = newWebRTC(opts)
	case Speex:
		eng, err = newSpeex(opts)
	default:
		return nil, fmt.Errorf("new processor %q: %w", lib, ErrLibrary)
	}
	if err != nil {
		return nil, fmt.Errorf("new %s processor: %w", lib, err)
	}
	return &Processor{eng: eng, delay: opts.Delay}, nil
}

// Far takes what the door's speaker is about to play (the reference).
func (p *Processor) Far(pcm []int16) error {
	return p.frames(pcm, func(f []int16) error { return p.eng.far(f) })
}

// Near cleans microphone audio in place.
func (p *Processor) Near(pcm []int16) error {
	return p.frames(pcm, func(f []int16) error { return p.eng.near(f, p.delay) })
}

// frames runs do on each 10 ms frame of pcm under the lock that orders
// the speaker's and the microphone's goroutines.
func (p *Processor) frames(pcm []int16, do func(frame []int16) error) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.eng == nil {
		return ErrClosed
	}
	if len(pcm)%FrameSamples != 0 {
		return ErrFrameSize
	}
	for off := 0; off < len(pcm); off += FrameSamples {
		if err := do(pcm[off : off+FrameSamples]); err != nil {
			return err
		}
	}
	return nil
}

// SetDelay updates the delay hint (Options.Delay), for when the sound
// card's reported delay changes.
func (p *Processor) SetDelay(d time.Duration) {
	p.mu.Lock()
	p.delay = d
	p.mu.Unlock()
}

// Close frees the library's state; later calls return ErrClosed.
func (p *Processor) Close() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.eng != nil {
		p.eng.close()
		p.eng = nil
	}
}
