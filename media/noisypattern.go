package media

import (
	"context"
	"time"
)

// noiseFields is how many noise fields a NoisyTestPattern prepares; each
// frame adds the next one.
const noiseFields = 8

// NoisyTestPattern is the test pattern with sensor-like noise: each luma
// sample moved by −12 to +4 levels (a signed remainder of the generator's
// top byte, so not the ±4 it was meant to be; kept as it is, since the
// encoder figures measured so far were taken with it), a fresh field each
// frame drawn from eight prepared ones, the same on every run. It stands in for a camera where the encoder's cost or
// bitrate is measured: a camera's picture is never still, so its encoder
// works on every macroblock, while the bare pattern is flat and nearly
// static and codes to under 100 kb/s, which flatters the encoder (the cost
// every viewer of the door shares). The daemon opens it instead of the
// pattern when INTERCOM_TEST_PATTERN_NOISE=1 (daemon/hardware.go); nothing
// in the configuration reaches it.
type NoisyTestPattern struct {
	*TestPattern
	noise [noiseFields][]int8
}

// NewNoisyTestPattern returns a noisy test pattern of the given format.
func NewNoisyTestPattern(f VideoFormat) (*NoisyTestPattern, error) {
	p, err := NewTestPattern(f)
	if err != nil {
		return nil, err
	}
	n := &NoisyTestPattern{TestPattern: p}
	seed := uint32(1)
	for i := range n.noise {
		n.noise[i] = make([]int8, f.Width*f.Height)
		for j := range n.noise[i] {
			seed = seed*1664525 + 1013904223 // Numerical Recipes' LCG: cheap, and the same on every run
			n.noise[i][j] = int8(seed>>24)%9 - 4
		}
	}
	return n, nil
}

// OpenNoisyTestPattern is NewNoisyTestPattern as a StreamConfig.OpenVideo.
func OpenNoisyTestPattern(f VideoFormat) (VideoSource, error) {
	p, err := NewNoisyTestPattern(f)
	if err != nil {
		return nil, err
	}
	return p, nil
}

// ReadFrame waits for the pattern's next frame and adds this frame's noise.
func (p *NoisyTestPattern) ReadFrame(ctx context.Context) (*Frame, error) {
	f, err := p.TestPattern.ReadFrame(ctx)
	if err != nil {
		return nil, err
	}
	p.addNoise(f)
	return f, nil
}

// Render draws the next frame for time now, noise included, without
// waiting, and returns it.
func (p *NoisyTestPattern) Render(now time.Time) *Frame {
	f := p.TestPattern.Render(now)
	p.addNoise(f)
	return f
}

// addNoise adds the field of f's sequence number to its luma. The
// pattern's luma stays within 16–235, so −12 to +4 never wraps.
func (p *NoisyTestPattern) addNoise(f *Frame) {
	y := f.Image.Y
	for j, v := range p.noise[f.Seq%noiseFields] {
		y[j] = byte(int(y[j]) + int(v))
	}
}
