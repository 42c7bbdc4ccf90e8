package media

import (
	"testing"
	"time"
)

func constFrame(v int16) []int16 {
	f := make([]int16, AudioFrameSamples)
	for i := range f {
		f[i] = v
	}
	return f
}

func TestMixerSumsVoices(t *testing.T) {
	m := NewMixer(AudioFrame, 120*time.Millisecond)
	a, b := m.NewInput(), m.NewInput()
	out := make([]int16, AudioFrameSamples)

	a.WritePCM(constFrame(1000))
	b.WritePCM(constFrame(-300))
	if n := m.Read(out); n != 2 || out[0] != 700 || out[len(out)-1] != 700 {
		t.Fatalf("two voices: %d inputs, out %d..%d, want 2, 700", n, out[0], out[len(out)-1])
	}
	// Only one has audio: the other adds silence, not a gap.
	a.WritePCM(constFrame(1000))
	if n := m.Read(out); n != 1 || out[0] != 1000 {
		t.Fatalf("one voice: %d inputs, out %d, want 1, 1000", n, out[0])
	}
	if n := m.Read(out); n != 0 || out[0] != 0 {
		t.Fatalf("no voice: %d inputs, out %d, want 0, 0", n, out[0])
	}
	// Saturation, not wrap-around (both ran dry above: they prefill
	// their raised target first).
	for _, v := range []int16{30000, -30000} {
		for range 3 {
			a.WritePCM(constFrame(v))
			b.WritePCM(constFrame(v))
		}
		for range 3 {
			m.Read(out)
		}
		if want := max(-32768, min(32767, 2*int32(v))); int32(out[0]) != want {
			t.Fatalf("loud sum %d, want %d", out[0], want)
		}
	}
}

// Two residents talking at once used to be appended to one buffer: 40 ms
// of audio for every 20 ms played, so the buffer overflowed and dropped.
// Mixed, each keeps its own pace and nothing is lost.
func TestMixerTwoVoicesKeepTheirPace(t *testing.T) {
	m := NewMixer(40*time.Millisecond, 120*time.Millisecond)
	a, b := m.NewInput(), m.NewInput()
	out := make([]int16, AudioFrameSamples)
	for i := range 500 { // 10 s
		a.WritePCM(constFrame(100))
		b.WritePCM(constFrame(10))
		m.Read(out)
		if i > 0 && out[0] != 110 {
			t.Fatalf("period %d: %d, want 110", i, out[0])
		}
	}
	st := m.Stats()
	if st.Dropped != 0 || st.Written != 2*500*AudioFrameSamples {
		t.Fatalf("stats %+v: want nothing dropped, both inputs written", st)
	}
	if m.Level() > 20*time.Millisecond {
		t.Fatalf("delay grew to %v", m.Level())
	}
}

// A resident whose clock runs fast fills only their own buffer: another
// resident's voice is not delayed by it.
func TestMixerFastSenderDelaysOnlyItself(t *testing.T) {
	m := NewMixer(40*time.Millisecond, 120*time.Millisecond)
	fast, steady := m.NewInput(), m.NewInput()
	out := make([]int16, AudioFrameSamples)
	for i := range 1000 {
		fast.WritePCM(constFrame(1))
		if i%10 == 0 { // 10 % fast
			fast.WritePCM(constFrame(1))
		}
		steady.WritePCM(constFrame(2))
		m.Read(out)
	}
	if l := steady.p.Level(); l > adaptMargin {
		t.Errorf("steady input holds %v", l)
	}
	if l := fast.p.Level(); l > 120*time.Millisecond {
		t.Errorf("fast input holds %v, beyond its bound", l)
	}
	if st := m.Stats(); st.Dropped == 0 {
		t.Error("the fast input never dropped back to its target")
	}
}

func TestMixerInputClose(t *testing.T) {
	m := NewMixer(AudioFrame, 120*time.Millisecond)
	a, b := m.NewInput(), m.NewInput()
	a.WritePCM(constFrame(5))
	b.WritePCM(constFrame(7))
	a.Close()
	a.Close() // harmless
	out := make([]int16, AudioFrameSamples)
	if n := m.Read(out); n != 1 || out[0] != 7 {
		t.Fatalf("after close: %d inputs, out %d; want 1, 7", n, out[0])
	}
	// The closed input's counters still count.
	if st := m.Stats(); st.Written != 2*AudioFrameSamples {
		t.Fatalf("written %d, want %d", st.Written, 2*AudioFrameSamples)
	}
	b.Close()
	if n := m.Read(out); n != 0 || out[0] != 0 {
		t.Fatalf("no inputs: %d, out %d", n, out[0])
	}
}

func BenchmarkMixerRead(b *testing.B) {
	for _, n := range []int{1, 4} {
		b.Run(map[int]string{1: "inputs=1", 4: "inputs=4"}[n], func(b *testing.B) {
			m := NewMixer(40*time.Millisecond, 120*time.Millisecond)
			var ins []*MixerInput
			for range n {
				ins = append(ins, m.NewInput())
			}
			f, out := constFrame(3), make([]int16, AudioFrameSamples)
			for b.Loop() {
				for _, in := range ins {
					in.WritePCM(f)
				}
				m.Read(out)
			}
		})
	}
}
