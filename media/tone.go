package media

import (
	"context"
	"math"
)

// Tone is a synthetic AudioSource: a continuous sine wave, 48 kHz mono,
// delivered 20 ms at a time in real time.
type Tone struct {
	step, phase float64
	amp         float64
	buf         []int16
	pace        *pacer
}

// NewTone returns a tone of freq Hz at amplitude amp (0..1 of full scale).
func NewTone(freq, amp float64) *Tone {
	return &Tone{
		step: 2 * math.Pi * freq / SampleRate,
		amp:  amp * math.MaxInt16,
		buf:  make([]int16, AudioFrameSamples),
		pace: newPacer(AudioFrame),
	}
}

// ReadAudio waits for the next 20 ms slot and returns its samples.
func (t *Tone) ReadAudio(ctx context.Context) ([]int16, error) {
	if _, err := t.pace.wait(ctx); err != nil {
		return nil, err
	}
	return t.Next(), nil
}

// Next synthesises the next 20 ms without waiting.
func (t *Tone) Next() []int16 {
	for i := range t.buf {
		t.buf[i] = int16(t.amp * math.Sin(t.phase))
		t.phase += t.step
	}
	t.phase = math.Mod(t.phase, 2*math.Pi)
	return t.buf
}

// Close stops the tone's timer.
func (t *Tone) Close() error {
	t.pace.stop()
	return nil
}
