package daemon

import (
	"log/slog"
	"math"
	"testing"

	"github.com/doorbell/intercom/media"
)

// The microphone the stream opens goes through the processing audio.*
// asks for: with processing: none it delivers what the card captured (the
// hwmic file's 1 kHz tone, unchanged); with the stages on, the canceller
// sits between the speaker and it, and what it delivers is processed.
func TestHardwareMicrophoneProcessing(t *testing.T) {
	if _, err := hwtestALSA(); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		audio     string
		processed bool
	}{
		{"processing: none", false},
		{"echo_cancellation: false, noise_suppression: false, gain_control: false, high_pass: false", false},
		{"processing: all", true},
		{"echo_cancellation: false", true},
	} {
		t.Run(tc.audio, func(t *testing.T) {
			cfg := hwtestConfig(t, "hardware: {audio: alsa}\naudio: {capture: hwmic, playback: hwspk, "+tc.audio+"}\n")
			hw, err := openHardware(cfg, slog.New(slog.DiscardHandler))
			if err != nil {
				t.Fatal(err)
			}
			defer hw.Close()
			if (hw.echo != nil) != tc.processed || (hw.canceller != nil) != tc.processed {
				t.Fatalf("canceller built: %v, want %v", hw.canceller != nil, tc.processed)
			}
			mic, err := hw.openAudio()()
			if err != nil {
				t.Fatal(err)
			}
			defer mic.Close()
			changed := 0
			for f := range 25 {
				pcm, err := mic.ReadAudio(t.Context())
				if err != nil {
					t.Fatal(err)
				}
				for i, v := range pcm {
					n := f*len(pcm) + i
					want := int16(0.25 * 32767 * math.Sin(2*math.Pi*1000*float64(n)/48000))
					if v != want {
						changed++
					}
				}
			}
			if got := changed > 0; got != tc.processed {
				t.Errorf("%d of %d samples changed; processed %v, want %v", changed, 25*960, got, tc.processed)
			}
		})
	}
}

// INTERCOM_TEST_PATTERN_NOISE=1 opens the noisy test pattern in place of
// the bare one (left to the stream: OpenVideo nil); nothing else does.
func TestHardwareTestPatternNoise(t *testing.T) {
	hw := &hardware{}
	t.Setenv("INTERCOM_TEST_PATTERN_NOISE", "")
	if hw.openVideo() != nil {
		t.Fatal("without the variable the stream's own test pattern is not kept")
	}
	t.Setenv("INTERCOM_TEST_PATTERN_NOISE", "1")
	open := hw.openVideo()
	if open == nil {
		t.Fatal("INTERCOM_TEST_PATTERN_NOISE=1 left the bare test pattern")
	}
	src, err := open(media.VideoFormat{Width: 160, Height: 120, FPS: 15})
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	if _, ok := src.(*media.NoisyTestPattern); !ok {
		t.Fatalf("opened %T, want *media.NoisyTestPattern", src)
	}
}
