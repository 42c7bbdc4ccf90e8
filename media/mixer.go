package media

import (
	"sync"
	"time"
)

// Mixer sums the voices of several residents for one speaker. Every remote
// audio stream writes to its own MixerInput, which is a bounded Playout of
// its own, and Read adds up one period of each. Two residents talking at
// once are therefore heard together and at the right speed (appending
// both to one buffer would play them one after the other and overflow it),
// and one resident's jitter or fast clock never delays another's voice.
// Safe for concurrent use.
type Mixer struct {
	target, bound time.Duration

	mu      sync.Mutex
	inputs  []*MixerInput
	closed  PlayoutStats // counters of inputs already closed
	scratch []int16
	acc     []int32
}

// NewMixer returns a mixer whose inputs each keep target of jitter reserve
// and drop back to it beyond bound (see NewPlayout).
func NewMixer(target, bound time.Duration) *Mixer {
	return &Mixer{target: target, bound: bound}
}

// MixerInput is one stream's way into a Mixer; it implements PCMSink.
type MixerInput struct {
	m *Mixer
	p *Playout
}

// NewInput adds an input; the stream's reader writes to it and closes it
// when the stream ends.
func (m *Mixer) NewInput() *MixerInput {
	in := &MixerInput{m: m, p: NewPlayout(m.target, m.bound)}
	m.mu.Lock()
	m.inputs = append(m.inputs, in)
	m.mu.Unlock()
	return in
}

// WritePCM implements PCMSink. It never blocks.
func (in *MixerInput) WritePCM(pcm []int16) { in.p.WritePCM(pcm) }

// SenderPaused implements PauseSink (see Playout.SenderPaused).
func (in *MixerInput) SenderPaused() { in.p.SenderPaused() }

// Close removes the input from the mix; what it still held is dropped.
// Closing twice is harmless.
func (in *MixerInput) Close() {
	m := in.m
	m.mu.Lock()
	defer m.mu.Unlock()
	for i, x := range m.inputs {
		if x == in {
			m.inputs = append(m.inputs[:i], m.inputs[i+1:]...)
			m.closed = addStats(m.closed, in.p.Stats())
			return
		}
	}
}

// Read fills out with the sum of one period of every input, saturating,
// and reports how many inputs had audio for it. Inputs that ran dry add
// silence.
func (m *Mixer) Read(out []int16) int {
	m.mu.Lock()
	defer m.mu.Unlock()
	if len(m.inputs) == 1 {
		// The common case, one resident, needs no arithmetic.
		if m.inputs[0].p.Read(out) > 0 {
			return 1
		}
		return 0
	}
	if cap(m.scratch) < len(out) {
		m.scratch, m.acc = make([]int16, len(out)), make([]int32, len(out))
	}
	scratch, acc := m.scratch[:len(out)], m.acc[:len(out)]
	clear(acc)
	voices := 0
	for _, in := range m.inputs {
		k := in.p.Read(scratch)
		if k == 0 {
			continue
		}
		voices++
		for i, v := range scratch[:k] {
			acc[i] += int32(v)
		}
	}
	for i, v := range acc {
		out[i] = int16(max(-32768, min(32767, v)))
	}
	return voices
}

// Level is the longest delay any input adds now.
func (m *Mixer) Level() time.Duration {
	m.mu.Lock()
	defer m.mu.Unlock()
	var l time.Duration
	for _, in := range m.inputs {
		l = max(l, in.p.Level())
	}
	return l
}

// Stats returns the inputs' counters added up, closed inputs included;
// Level and MaxLevel are the largest of any input.
func (m *Mixer) Stats() PlayoutStats {
	m.mu.Lock()
	defer m.mu.Unlock()
	s := m.closed
	s.Level, s.Target = 0, m.target
	for i, in := range m.inputs {
		st := in.p.Stats()
		s = addStats(s, st)
		s.Level = max(s.Level, st.Level)
		if i == 0 || st.Target > s.Target {
			s.Target = st.Target
		}
	}
	s.Bound = durationOf(max(samples(m.bound), samples(m.target)+AudioFrameSamples))
	return s
}

func addStats(a, b PlayoutStats) PlayoutStats {
	a.Written += b.Written
	a.Played += b.Played
	a.Dropped += b.Dropped
	a.DropEvents += b.DropEvents
	a.Underflows += b.Underflows
	a.Pauses += b.Pauses
	a.SilenceSamples += b.SilenceSamples
	a.Trimmed += b.Trimmed
	a.MaxLevel = max(a.MaxLevel, b.MaxLevel)
	return a
}

// Reset empties every input (the sound card was reopened).
func (m *Mixer) Reset() {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, in := range m.inputs {
		in.p.Reset()
	}
}
