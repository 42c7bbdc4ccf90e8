package media

import (
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
		// sequence number (any order, gaps, repeats): never a panic, and
		// a gap is counted, not filled beyond the bound.
		if len(b) >= 2 {
			before := r.meter.Snapshot()
			_ = r.WriteRTP(uint16(b[0])<<8|uint16(b[1]), b[2:], NoLevel, time.Now())
			if after := r.meter.Snapshot(); after.Concealed-before.Concealed > maxConceal {
				t.Fatalf("one gap filled with %d frames", after.Concealed-before.Concealed)
			}
		}
	})
}
