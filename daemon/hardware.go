package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"time"

	"golang.org/x/sync/errgroup"
	pgpio "periph.io/x/conn/v3/gpio"
	"periph.io/x/host/v3"

	"github.com/doorbell/intercom/gpio"
	"github.com/doorbell/intercom/media"
	"github.com/doorbell/intercom/media/aec"
	"github.com/doorbell/intercom/media/alsa"
	"github.com/doorbell/intercom/media/v4l2"
	"github.com/doorbell/intercom/provisioning"
)

// hardware is the box's wired parts as the configuration selects them:
// simulated (gpio: sim, camera: testpattern, audio: tone) or real (periph,
// v4l2, alsa). The daemon and hwtest build it the same way.
type hardware struct {
	cfg *provisioning.Config
	log *slog.Logger

	ringer *gpio.Ringer
	relay  *gpio.Relay
	button *gpio.Button
	// buttonPin is the button's input pin; with gpio: sim it is a fake
	// whose edges tests (and hwtest's) drive.
	buttonPin pgpio.PinIO

	camera      *v4l2.Camera // nil: test pattern
	passThrough bool         // the camera's H.264 is sent as it is

	speaker *alsa.Speaker // nil: the resident's audio is only metered
	// The microphone's processing (audio.processing and its switches):
	// one canceller for as long as the sound card, so its filter stays
	// converged from call to call. nil when every stage is off.
	canceller *aec.Processor
	echo      *alsa.Echo
}

// openHardware opens the configured GPIO pins (relay and ringer driven off
// at once) and prepares the camera and the sound card, which are opened when
// used. A pin that does not exist fails; a missing camera does not (it
// shows "camera unavailable" and is retried).
func openHardware(cfg *provisioning.Config, log *slog.Logger) (*hardware, error) {
	h := &hardware{cfg: cfg, log: log}
	if err := h.openGPIO(); err != nil {
		h.Close()
		return nil, err
	}
	if cfg.Hardware.Camera == "v4l2" {
		// The stream's codecs are fixed when it is built, so whether the
		// camera's own H.264 can be passed through is decided now: then
		// the stream offers H.264 only (VP8 would need the camera's H.264
		// decoded). A camera absent at start is taken as raw.
		formats, err := v4l2.Probe(nil, cfg.Camera.Device)
		if err != nil {
			log.Warn("camera not available at start; will retry", "device", cfg.Camera.Device, "err", err)
		}
		h.passThrough = err == nil && v4l2.PassesThrough(formats, cfg.Camera.Format)
		h.camera = v4l2.NewCamera(v4l2.Config{
			Device: cfg.Camera.Device, Format: cfg.Camera.Format, PassThrough: h.passThrough,
			Logger: log.With("component", "camera"),
		})
	}
	if cfg.Hardware.Audio == "alsa" {
		if err := h.openProcessing(); err != nil {
			h.Close()
			return nil, err
		}
		h.speaker = alsa.NewSpeaker(cfg.Audio.Playback, float64(cfg.Audio.PlaybackGainDB), h.muted("speaker"),
			h.echo, log.With("component", "speaker"))
		if testBursts() {
			spk := h.speaker
			spk.Tap(burstTap(func() time.Duration { return spk.Stats().Level }, log.With("component", "speaker")))
		}
	}
	return h, nil
}

// openProcessing builds the microphone's processing from audio.*: the
// speaker feeds it what it plays, the microphone is cleaned by it.
func (h *hardware) openProcessing() error {
	echo, noise, gain, highPass := h.cfg.Audio.Stages()
	if !echo && !noise && !gain && !highPass {
		return nil
	}
	p, err := aec.New(aec.Options{NoEcho: !echo, NoNoise: !noise, NoGain: !gain, NoHighPass: !highPass})
	if err != nil {
		return fmt.Errorf("microphone processing: %w", err)
	}
	h.canceller = p
	h.echo = alsa.NewEcho(p, h.log.With("component", "echo"))
	return nil
}

func (h *hardware) openGPIO() error {
	c := h.cfg.GPIO
	var err error
	pin := func(name, fallback string) (pgpio.PinIO, error) {
		if h.cfg.Hardware.GPIO == "sim" || name == "" {
			// Not fitted (or simulated): a fake pin keeps the logic the same.
			return gpio.SimButtonPin(fallback), nil
		}
		return gpio.Lookup(name)
	}
	if h.cfg.Hardware.GPIO == "periph" {
		// Registers the Linux GPIO character device driver (gpioioctl).
		if _, err := host.Init(); err != nil {
			return fmt.Errorf("gpio drivers: %w", err)
		}
	}
	relayPol, err := gpio.ParsePolarity(c.RelayActive)
	if err != nil {
		return err
	}
	relayPin, err := pin(c.Relay, "SIM_RELAY")
	if err != nil {
		return fmt.Errorf("relay: %w", err)
	}
	if h.relay, err = gpio.NewRelay(relayPin, relayPol); err != nil {
		return err
	}
	ringerPol, err := gpio.ParsePolarity(c.RingerActive)
	if err != nil {
		return err
	}
	ringerPin, err := pin(c.Ringer, "SIM_RINGER")
	if err != nil {
		return fmt.Errorf("ringer: %w", err)
	}
	if h.ringer, err = gpio.NewRinger(ringerPin, ringerPol, gpio.DefaultCadence, h.log.With("component", "ringer")); err != nil {
		return err
	}
	buttonPol, err := gpio.ParsePolarity(c.ButtonActive)
	if err != nil {
		return err
	}
	if h.buttonPin, err = pin(c.Button, "SIM_BUTTON"); err != nil {
		return fmt.Errorf("button: %w", err)
	}
	h.button, err = gpio.NewButton(h.buttonPin, buttonPol, c.Debounce, h.log.With("component", "button"))
	return err
}

func (h *hardware) muted(what string) bool {
	return h.cfg.Audio.Mute == what || h.cfg.Audio.Mute == "both"
}

// openVideo is media.StreamConfig.OpenVideo: nil keeps the test pattern.
// INTERCOM_TEST_PATTERN_NOISE=1 adds sensor-like noise to the pattern
// (media.NoisyTestPattern), for benchmarks whose encoder must fill a
// real camera's bitrate: the bare pattern codes to under 100 kb/s.
func (h *hardware) openVideo() func(media.VideoFormat) (media.VideoSource, error) {
	if h.camera == nil && os.Getenv("INTERCOM_TEST_PATTERN_NOISE") == "1" {
		return media.OpenNoisyTestPattern
	}
	if h.camera == nil {
		return nil
	}
	return h.camera.OpenVideo
}

// openAudio is media.StreamConfig.OpenAudio: nil keeps the tone.
// INTERCOM_TEST_BURSTS=1 makes the microphone timestamped tone bursts
// (media.Bursts), through the configured processing when audio is alsa.
func (h *hardware) openAudio() func() (media.AudioSource, error) {
	if testBursts() {
		return func() (media.AudioSource, error) {
			b := media.NewBursts(0)
			if h.cfg.Hardware.Audio != "alsa" {
				return b, nil
			}
			return alsa.NewSourceMicrophone(b, float64(h.cfg.Audio.CaptureGainDB), h.muted("microphone"), h.echo), nil
		}
	}
	if h.cfg.Hardware.Audio != "alsa" {
		return nil
	}
	return func() (media.AudioSource, error) {
		return alsa.OpenMicrophone(h.cfg.Audio.Capture, float64(h.cfg.Audio.CaptureGainDB), h.muted("microphone"), h.echo)
	}
}

// testBursts reports INTERCOM_TEST_BURSTS=1: mouth-to-ear measurements
// (cmd/intercom/e2e BenchmarkMouthToEar). The microphone sends
// timestamped tone bursts and the speaker logs the residents' bursts it
// plays ("burst heard"). Off by default; no configuration reaches it.
func testBursts() bool { return os.Getenv("INTERCOM_TEST_BURSTS") == "1" }

// burstTap detects the residents' bursts (phase media.BurstPhaseResident)
// in what the speaker plays and logs each onset: when it was handed to
// alsa-lib, the device's delay then, and the latency from the burst's
// start to the handing over plus that delay, i.e. to when the card says
// it is heard; beside it the audio then waiting in the speaker's playout
// buffers (level).
func burstTap(level func() time.Duration, log *slog.Logger) func([]int16, time.Time, time.Duration) {
	// The detector runs on the handing-over clock; each onset then takes
	// the delay of the period it was in (the last few are kept: an onset
	// is reported once its tone was measured, a period or two later).
	det := media.NewBurstDetector(media.BurstPhaseResident)
	type period struct {
		handed time.Time
		delay  time.Duration
	}
	var recent [8]period
	n := 0
	return func(pcm []int16, handed time.Time, delay time.Duration) {
		recent[n%len(recent)] = period{handed, delay}
		n++
		for _, o := range det.Write(pcm, handed) {
			d := delay
			for i := range min(n, len(recent)) {
				if p := recent[(n-1-i)%len(recent)]; !p.handed.After(o.At) {
					d = p.delay
					break
				}
			}
			log.Info("burst heard", "k", o.K, "refused", o.Refused, "freq", o.Freq,
				"handed_unix_us", o.At.UnixMicro(), "delay_us", d.Microseconds(), "playout_us", level().Microseconds(),
				"latency_us", (o.At.Sub(o.Start) + d).Microseconds())
		}
	}
}

// encoders drops VP8 when the camera passes H.264 through. The H.264
// encoder stays: it encodes the "camera unavailable" picture.
func (h *hardware) encoders(e media.Encoders) media.Encoders {
	if h.passThrough {
		e.VP8 = nil
	}
	return e
}

// sink is the peers' speaker: nil (no interface value) without one.
func (h *hardware) sink() media.Speaker {
	if h.speaker == nil {
		return nil
	}
	return h.speaker
}

// Run owns the button and the speaker until ctx is done; press is called
// for every debounced press.
func (h *hardware) Run(ctx context.Context, press func()) error {
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return h.button.Run(gctx, press) })
	if h.speaker != nil {
		g.Go(func() error { return h.speaker.Run(gctx) })
	}
	return g.Wait()
}

// status is the hardware's part of the status document.
func (h *hardware) status() hardwareStatus {
	st := hardwareStatus{ButtonPressed: h.button.Pressed(), ButtonPresses: h.button.Presses()}
	if h.camera != nil {
		cs := h.camera.Status()
		st.Camera, st.CameraPassthrough = &cs, h.passThrough
	}
	if h.speaker != nil {
		ss := h.speaker.Stats()
		st.Speaker, st.SpeakerDelay = &ss, h.speaker.Delay().String()
	}
	if h.echo != nil {
		if d := h.echo.Delay(); d >= 0 {
			st.EchoDelay = d.String()
		}
		st.EchoShifts = h.echo.Shifts()
	}
	return st
}

// hardwareStatus is the media section's hardware part: the button, and the
// camera and speaker when fitted.
type hardwareStatus struct {
	ButtonPressed     bool                `json:"button_pressed"`
	ButtonPresses     uint64              `json:"button_presses"`
	Camera            *v4l2.Status        `json:"camera,omitempty"`
	CameraPassthrough bool                `json:"camera_passthrough,omitempty"`
	Speaker           *media.PlayoutStats `json:"speaker,omitempty"`
	SpeakerDelay      string              `json:"speaker_delay,omitempty"`
	// EchoDelay is the playback-to-capture delay the sound card reports,
	// as the echo canceller aligns by it; EchoShifts counts how often it
	// moved while running.
	EchoDelay  string `json:"echo_delay,omitempty"`
	EchoShifts uint64 `json:"echo_shifts,omitempty"`
}

// Close de-energises the relay (also on every error path of start-up) and
// frees the canceller; the speaker and microphone must have stopped.
func (h *hardware) Close() error {
	var errs []error
	if h.relay != nil {
		errs = append(errs, h.relay.Halt())
	}
	if h.canceller != nil {
		h.canceller.Close()
	}
	return errors.Join(errs...)
}
