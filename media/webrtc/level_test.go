package webrtc

import (
	"sync/atomic"
	"testing"
	"time"

	"github.com/doorbell/intercom/media"
)

// mixSpeaker is a speaker without a sound card: the residents' voices
// mixed, read by the test.
type mixSpeaker struct{ *media.Mixer }

func (m mixSpeaker) NewInput() media.PCMInput { return m.Mixer.NewInput() }

// A resident's client writes each packet's level into it (RFC 6464): the
// door does not decode a silent resident, meters the level it was told,
// and decodes again as soon as they speak, into its own mixer input.
func TestAudioLevelsGateDecoding(t *testing.T) {
	e := newEnv(t)
	var level atomic.Uint32
	level.Store(127) // a muted microphone
	e.level = func() uint8 { return uint8(level.Load()) }
	mix := media.NewMixer(40*time.Millisecond, 120*time.Millisecond)
	e.factory.sink = mixSpeaker{mix}
	p, _ := e.call(t, []media.Codec{media.H264})

	waitFor(t, "silent packets at the door", 10*time.Second, func() bool { return e.factory.ReceivedAudio().Packets > 25 })
	a := e.factory.ReceivedAudio()
	if a.Skipped != a.Packets || a.DecodeErrors != 0 || a.Level != media.SilenceDBov {
		t.Fatalf("silent resident: %+v; want every packet skipped, level silence", a)
	}
	if w := mix.Stats().Written; w != 0 {
		t.Fatalf("%d samples of a silent resident reached the speaker", w)
	}

	level.Store(15) // talking: the tone is -15 dBov
	waitFor(t, "the resident heard", 10*time.Second, func() bool {
		a := e.factory.ReceivedAudio()
		return a.Packets-a.Skipped > 20 && a.Level > -20
	})
	if mix.Stats().Written == 0 {
		t.Fatal("the resident's voice did not reach the speaker")
	}
	p.Close()
	// Closed: the input left the mix, so nothing more is played.
	out := make([]int16, media.AudioFrameSamples)
	for range 10 {
		mix.Read(out)
	}
	if n := mix.Read(out); n != 0 {
		t.Fatalf("%d inputs still playing after the call", n)
	}
}
