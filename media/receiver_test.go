package media

import (
	"encoding/binary"
	"strings"
	"testing"
	"time"
)

func TestAudioMeterLevel(t *testing.T) {
	m := NewAudioMeter()
	if s := m.Snapshot(); s.Level != SilenceDBov || s.Packets != 0 || !s.LastPacket.IsZero() {
		t.Fatalf("empty meter: %+v", s)
	}
	tone := NewTone(1000, 0.5) // -9 dBov
	now := time.Now()
	for i := 0; i < 50; i++ {
		now = now.Add(AudioFrame)
		m.add(40, tone.Next(), false, now)
	}
	s := m.Snapshot()
	if s.Packets != 50 || s.Bytes != 2000 || !s.LastPacket.Equal(now) {
		t.Errorf("%+v", s)
	}
	if s.Level < -9.5 || s.Level > -8.5 {
		t.Errorf("level %.2f dBov, want -9", s.Level)
	}
	// Silence pulls the level down within about a second.
	silence := make([]int16, AudioFrameSamples)
	for i := 0; i < 50; i++ {
		now = now.Add(AudioFrame)
		m.add(3, silence, false, now)
	}
	if s := m.Snapshot(); s.Level > -20 {
		t.Errorf("level after 1s of silence %.1f", s.Level)
	}
	m.add(3, nil, true, now)
	if s := m.Snapshot(); s.DecodeErrors != 1 || s.Packets != 101 {
		t.Errorf("%+v", s)
	}
}

func TestOpusReceiverRejectsGarbage(t *testing.T) {
	m := NewAudioMeter()
	r, err := NewOpusReceiver(m, nil)
	if err != nil {
		t.Fatal(err)
	}
	_ = r.WriteOpus([]byte{0xff, 0xff, 0xff}, NoLevel, time.Now()) // must not panic
	if err := r.WriteOpus(nil, NoLevel, time.Now()); err != nil {
		t.Error(err)
	}
}

func FuzzOpusReceiver(f *testing.F) {
	f.Add([]byte{0x78, 0x01, 0x02})
	f.Add([]byte{0xfc, 0xff, 0xfe})
	r, err := NewOpusReceiver(NewAudioMeter(), nil)
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		_ = r.WriteOpus(b, NoLevel, time.Now())
		// The same bytes as a packet whose first two bytes are its
		// sequence number and next four its timestamp (any order, gaps,
		// repeats, pauses): never a panic, and a gap is counted, not
		// filled beyond the bound.
		if len(b) >= 6 {
			before := r.meter.Snapshot()
			_ = r.WriteRTP(uint16(b[0])<<8|uint16(b[1]), binary.BigEndian.Uint32(b[2:6]), b[6:], NoLevel, time.Now())
			if after := r.meter.Snapshot(); after.Concealed-before.Concealed > maxConceal {
				t.Fatalf("one gap filled with %d frames", after.Concealed-before.Concealed)
			}
		}
	})
}

// pauseSink records what a receiver hands its sink, in order.
type pauseSink struct{ calls []string }

func (s *pauseSink) WritePCM(pcm []int16) { s.calls = append(s.calls, "pcm") }
func (s *pauseSink) SenderPaused()        { s.calls = append(s.calls, "paused") }

type frameDecoder struct{}

func (frameDecoder) DecodeToInt16(_ []byte, pcm []int16) (int, error) {
	return AudioFrameSamples, nil
}

// TestOpusReceiverTellsSenderPauses: a packet that follows the last with
// no gap in sequence numbers but later in RTP time than one frame ends a
// DTX pause, and the sink hears of it before the packet's audio; a gap in
// sequence numbers is loss, not a pause.
func TestOpusReceiverTellsSenderPauses(t *testing.T) {
	sink := &pauseSink{}
	r := NewOpusReceiverWith(NewAudioMeter(), sink, frameDecoder{})
	const f = AudioFrameSamples // RTP ticks a frame (48 kHz)
	now := time.Now()
	for _, p := range []struct {
		seq uint16
		ts  uint32
	}{
		{65534, 0},      // first
		{65535, f},      // next frame
		{0, 26 * f},     // after half a second of DTX, across the wrap
		{2, 28 * f},     // a packet lost: loss, not a pause
		{3, 29 * f},     // next frame
		{4, 29*f - 960}, // a timestamp going back: not a pause
	} {
		if err := r.WriteRTP(p.seq, p.ts, []byte{0xfc}, NoLevel, now); err != nil {
			t.Fatal(err)
		}
	}
	got := strings.Join(sink.calls, " ")
	if want := "pcm pcm paused pcm pcm pcm pcm"; got != want {
		t.Errorf("sink heard %q, want %q", got, want)
	}
}
