package media

import (
	"testing"
	"time"

	"github.com/pion/rtp"
	"github.com/pion/sdp/v3"
	"github.com/pion/webrtc/v4"
)

// step feeds every voice one 20 ms packet at its level and reports which
// were let through.
func step(vs *voices, v []*voice, levels []AudioLevel, now time.Time) []bool {
	got := make([]bool, len(v))
	for i, l := range levels {
		got[i] = vs.audible(v[i], l, now)
	}
	return got
}

func TestVoicesGate(t *testing.T) {
	vs := newVoices(MaxVoices)
	v := []*voice{vs.add()}
	t0 := time.Unix(1000, 0)
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }

	if step(vs, v, []AudioLevel{127}, at(0))[0] {
		t.Fatal("digital silence decoded")
	}
	if step(vs, v, []AudioLevel{VoiceGate}, at(20))[0] {
		t.Fatal("a level at the gate decoded")
	}
	if !step(vs, v, []AudioLevel{30}, at(40))[0] {
		t.Fatal("speech at -30 dBov not decoded")
	}
	// The hangover keeps the quiet end of a word...
	if !step(vs, v, []AudioLevel{100}, at(40+int(voiceHangover/time.Millisecond)-20))[0] {
		t.Fatal("quiet packet within the hangover not decoded")
	}
	// ...and then the gate closes.
	if step(vs, v, []AudioLevel{100}, at(40+int(voiceHangover/time.Millisecond)))[0] {
		t.Fatal("quiet packet after the hangover decoded")
	}
}

func TestVoicesLoudestTwo(t *testing.T) {
	vs := newVoices(2)
	v := []*voice{vs.add(), vs.add(), vs.add()}
	t0 := time.Unix(1000, 0)
	now := t0
	run := func(d time.Duration, levels ...AudioLevel) []bool {
		var got []bool
		for end := now.Add(d); now.Before(end); now = now.Add(20 * time.Millisecond) {
			got = step(vs, v, levels, now)
		}
		return got
	}
	eq := func(got []bool, want ...bool) bool {
		for i := range want {
			if got[i] != want[i] {
				return false
			}
		}
		return true
	}

	// Three talk alike: the first two keep their places.
	if got := run(time.Second, 30, 30, 30); !eq(got, true, true, false) {
		t.Fatalf("three alike: %v, want the first two", got)
	}
	// The third gets 3 dB louder: not enough to take a place.
	if got := run(time.Second, 30, 30, 27); !eq(got, true, true, false) {
		t.Fatalf("third 3 dB louder: %v", got)
	}
	// 10 dB louder: it takes the quietest place (here the second's, which
	// dropped to -35 dBov).
	if got := run(time.Second, 30, 35, 20); !eq(got, true, false, true) {
		t.Fatalf("third 10 dB louder: %v, want first and third", got)
	}
	// The first falls silent: after the hangover its place is free and
	// the second, still talking, has it.
	if got := run(time.Second, 127, 35, 20); !eq(got, false, true, true) {
		t.Fatalf("first silent: %v, want second and third", got)
	}
	// A voice that stops sending altogether (the resident left without a
	// goodbye) frees its place too once the hangover is over.
	now = now.Add(voiceHangover)
	if !vs.audible(v[0], 30, now) {
		t.Fatal("the first resident, talking again, is not let in")
	}
}

func TestVoicesRemoveFreesThePlace(t *testing.T) {
	vs := newVoices(1)
	a, b := vs.add(), vs.add()
	now := time.Unix(1000, 0)
	if !vs.audible(a, 30, now) || vs.audible(b, 30, now) {
		t.Fatal("one place: the first should have it")
	}
	vs.remove(a) // the resident hung up
	if !vs.audible(b, 30, now.Add(AudioFrame)) {
		t.Fatal("the place is still held by a removed voice")
	}
}

func FuzzVoices(f *testing.F) {
	f.Add([]byte{0, 30, 1, 30, 2, 30, 3, 127, 0, 10})
	f.Fuzz(func(t *testing.T, b []byte) {
		vs := newVoices(2)
		v := []*voice{vs.add(), vs.add(), vs.add(), vs.add()}
		now := time.Unix(1000, 0)
		for i := 0; i+1 < len(b); i += 2 {
			now = now.Add(time.Duration(b[i]>>2) * 10 * time.Millisecond)
			vs.audible(v[b[i]&3], AudioLevel(b[i+1]&127), now)
			n := 0
			for _, x := range v {
				if x.selected && x.active(now) {
					n++
				}
			}
			if n > 2 {
				t.Fatalf("%d voices selected", n)
			}
		}
	})
}

func TestLevelOf(t *testing.T) {
	h := &rtp.Header{}
	if LevelOf(h, 0) != NoLevel || LevelOf(h, 3) != NoLevel {
		t.Fatal("level from a packet without the extension")
	}
	ext, err := rtp.AudioLevelExtension{Level: 42, Voice: true}.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	if err := h.SetExtension(3, ext); err != nil {
		t.Fatal(err)
	}
	if got := LevelOf(h, 3); got != 42 {
		t.Fatalf("level %d, want 42", got)
	}
	if LevelOf(h, 4) != NoLevel {
		t.Fatal("level from another extension ID")
	}
	bad := &rtp.Header{}
	if err := bad.SetExtension(3, []byte{}); err == nil && LevelOf(bad, 3) != NoLevel {
		t.Fatal("level from an empty extension")
	}
	p := webrtc.RTPParameters{HeaderExtensions: []webrtc.RTPHeaderExtensionParameter{{URI: sdp.TransportCCURI, ID: 2}, {URI: sdp.AudioLevelURI, ID: 5}}}
	if id := AudioLevelExtension(p); id != 5 {
		t.Fatalf("extension ID %d, want 5", id)
	}
	if id := AudioLevelExtension(webrtc.RTPParameters{}); id != 0 {
		t.Fatalf("extension ID %d without it, want 0", id)
	}
}

// A receiver in a voice selection skips what is silent and meter it from the level.
func TestStreamReceiverSkipsSilence(t *testing.T) {
	m := NewAudioMeter()
	r, err := NewOpusReceiver(m, nil)
	if err != nil {
		t.Fatal(err)
	}
	vs := newVoices(MaxVoices)
	r.voices, r.voice = vs, vs.add() // as Stream.NewOpusReceiver does
	defer r.Close()
	now := time.Now()
	// Not a valid Opus packet: had it been decoded, it would count as a
	// decode error.
	junk := []byte{0xff, 0xff, 0xff}
	for i := range 10 {
		if err := r.WriteOpus(junk, 127, now.Add(time.Duration(i)*AudioFrame)); err != nil {
			t.Fatalf("silent packet: %v", err)
		}
	}
	got := m.Snapshot()
	if got.Packets != 10 || got.Skipped != 10 || got.DecodeErrors != 0 {
		t.Fatalf("meter %+v: want 10 packets, all skipped", got)
	}
	if got.Level != SilenceDBov {
		t.Fatalf("level %.1f dBov, want silence", got.Level)
	}
	if err := r.WriteOpus(junk, 20, now.Add(time.Second)); err == nil {
		t.Fatal("a loud packet was not decoded")
	}
}
