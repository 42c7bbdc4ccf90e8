package daemon

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/doorbell/intercom/callengine"
	"github.com/doorbell/intercom/device"
	"github.com/doorbell/intercom/device/webui"
	"github.com/doorbell/intercom/gpio"
	"github.com/doorbell/intercom/media"
)

// installer runs the web page's installer tests (device/webui) on the
// running intercom: the parts `intercom hwtest` tests on an idle box, here
// through the owners they already have (the ringer's loop, the door's relay
// runner, the speaker's mixer, the button's loop), so that no test fights
// the daemon for a pin or a sound card.
type installer struct {
	cfg    hwConfig
	ringer *gpio.Ringer
	relay  *gpio.Relay
	door   *device.Door
	sink   media.Speaker // nil: audio simulated
	stream *media.Stream // the microphone's way to the encoder
	phase  func() callengine.Phase

	mu      sync.Mutex
	pressed chan struct{} // non-nil while the button test waits
}

// hwConfig is what the tests say about the parts: simulated or wired.
type hwConfig struct {
	gpioSim    bool
	ringerName string
	relayName  string
}

var _ webui.Installer = (*installer)(nil)

// testPulse is the relay test's pulse, as hwtest's.
const testPulse = time.Second

func skipped(why string) error { return fmt.Errorf("%w: %s", webui.ErrSkipped, why) }

// Ring sounds the ringer for one cadence, as hwtest does, unless a visitor
// is being rung (the test would cut that ring short).
func (in *installer) Ring(ctx context.Context) (string, error) {
	if in.ringer.Ringing() || in.phase() != callengine.PhaseIdle {
		return "", errors.New("the intercom is ringing or in a call; try again when it is idle")
	}
	var total time.Duration
	for _, d := range gpio.DefaultCadence {
		total += d
	}
	in.ringer.Set(true)
	t := time.NewTimer(total)
	defer t.Stop()
	var err error
	select {
	case <-t.C:
	case <-ctx.Done():
		err = ctx.Err()
	}
	if in.phase() == callengine.PhaseIdle {
		// A press during the test rings on; only the test's own ring
		// stops.
		in.ringer.Set(false)
	}
	if err != nil {
		return "", err
	}
	if in.cfg.gpioSim {
		return "", skipped(fmt.Sprintf("simulated pin; one cadence (%v) ran", total))
	}
	return fmt.Sprintf("%s rang one cadence (%v)", in.cfg.ringerName, total), nil
}

// PulseRelay opens the door for testPulse through the door's relay runner
// and checks that the relay came on and went off again.
func (in *installer) PulseRelay(ctx context.Context) (string, error) {
	if err := in.door.TestPulse(testPulse); err != nil {
		return "", err
	}
	var seen bool
	deadline := time.Now().Add(testPulse + 5*time.Second)
	for {
		on := in.relay.Energised()
		seen = seen || on
		if seen && !on {
			break
		}
		if time.Now().After(deadline) {
			if on {
				return "", errors.New("relay still energised after the pulse")
			}
			return "", errors.New("relay never energised")
		}
		select {
		case <-ctx.Done():
			return "", ctx.Err()
		case <-time.After(10 * time.Millisecond):
		}
	}
	if in.cfg.gpioSim {
		return "", skipped(fmt.Sprintf("simulated pin; pulsed %v through the door's relay runner", testPulse))
	}
	return fmt.Sprintf("%s pulsed for %v and released", in.cfg.relayName, testPulse), nil
}

// Tone plays 1 s of 1 kHz at -12 dBFS through the speaker's mixer, beside
// whatever residents are saying.
func (in *installer) Tone(ctx context.Context) (string, error) {
	if in.sink == nil {
		return "", skipped("audio is simulated (tone)")
	}
	tone := media.NewTone(1000, 0.25)
	defer tone.Close()
	input := in.sink.NewInput()
	defer input.Close()
	tick := time.NewTicker(media.AudioFrame)
	defer tick.Stop()
	for range 50 { // 50 frames of 20 ms: one second
		input.WritePCM(tone.Next())
		select {
		case <-ctx.Done():
			return "", ctx.Err()
		case <-tick.C:
		}
	}
	return "1 s of 1 kHz at -12 dBFS played; did you hear it?", nil
}

// micListen is how long the microphone test listens.
const micListen = 5 * time.Second

// Microphone holds the audio encoder for micListen, so that the
// microphone runs through its whole path (gain, echo cancellation, noise
// suppression) also when no call is on, and reports the loudest and the
// average level the encoder got: what a resident would hear. The page's
// meter reads MicrophoneLevel meanwhile.
func (in *installer) Microphone(ctx context.Context) (string, error) {
	if in.stream == nil {
		return "", skipped("no media stream")
	}
	release, err := in.stream.Acquire(media.Opus)
	if err != nil {
		return "", fmt.Errorf("start the microphone: %w", err)
	}
	defer release()
	start := time.Now()
	peak, sum, n := -96.0, 0.0, 0
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for time.Since(start) < micListen {
		select {
		case <-ctx.Done():
			return "", ctx.Err()
		case <-tick.C:
		}
		l, ok := in.stream.InputLevel()
		if !ok || l.At.Before(start) {
			continue
		}
		peak = max(peak, l.PeakDBFS)
		sum += l.RMSDBFS
		n++
	}
	if n == 0 {
		return "", fmt.Errorf("no audio from the microphone in %v", micListen)
	}
	msg := fmt.Sprintf("%v listened: loudest %.1f dBFS, average %.1f dBFS RMS", micListen, peak, sum/float64(n))
	if in.sink == nil {
		return "", skipped("audio is simulated (the tone); " + msg)
	}
	if peak < -60 {
		return "", errors.New(msg + ": nearly silent; is the microphone connected, capture_gain_db too low?")
	}
	return msg + " (speak at the door while it listens; clipping near 0 dBFS means capture_gain_db is too high)", nil
}

// MicrophoneLevel is the last encoded frame's level, while the encoder runs.
func (in *installer) MicrophoneLevel() (peak, rms float64, ok bool) {
	if in.stream == nil {
		return 0, 0, false
	}
	l, ok := in.stream.InputLevel()
	if !ok || time.Since(l.At) > 200*time.Millisecond {
		return -96, -96, false
	}
	return l.PeakDBFS, l.RMSDBFS, true
}

// Button waits for the next press of the doorbell button; that press rings
// nobody (takePress).
func (in *installer) Button(ctx context.Context, wait time.Duration) (string, error) {
	ch := make(chan struct{}, 1)
	in.mu.Lock()
	if in.pressed != nil {
		in.mu.Unlock()
		return "", errors.New("a button test is already waiting")
	}
	in.pressed = ch
	in.mu.Unlock()
	defer func() {
		in.mu.Lock()
		in.pressed = nil
		in.mu.Unlock()
	}()
	start := time.Now()
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case <-ch:
		return fmt.Sprintf("press seen after %v", time.Since(start).Round(time.Millisecond)), nil
	case <-t.C:
		return "", fmt.Errorf("no press within %v", wait)
	case <-ctx.Done():
		return "", ctx.Err()
	}
}

// takePress reports whether a button test is waiting, and if so hands it
// the press, which then must not ring.
func (in *installer) takePress() bool {
	in.mu.Lock()
	defer in.mu.Unlock()
	if in.pressed == nil {
		return false
	}
	select {
	case in.pressed <- struct{}{}:
	default:
	}
	return true
}
