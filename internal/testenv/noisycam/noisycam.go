// Package noisycam is a camera stand-in for benchmarks: the door's test
// pattern with sensor-like noise. A camera's picture is never still, so
// its encoder works on every macroblock; the bare pattern is flat and
// nearly static, which makes the encoder (the cost every viewer of the
// door shares) unrealistically cheap.
package noisycam

import (
	"context"

	"github.com/doorbell/intercom/media"
)

// fields is how many noise fields are prepared; each frame adds one.
const fields = 8

// Camera is the test pattern with ±4 luma levels of noise, a fresh field
// each frame drawn from eight prepared ones (deterministic: the same
// noise on every run).
type Camera struct {
	*media.TestPattern
	noise [fields][]int8
}

// Open returns a Camera of format f; it is a media.StreamConfig.OpenVideo.
func Open(f media.VideoFormat) (media.VideoSource, error) {
	p, err := media.NewTestPattern(f)
	if err != nil {
		return nil, err
	}
	c := &Camera{TestPattern: p}
	seed := uint32(1)
	for i := range c.noise {
		c.noise[i] = make([]int8, f.Width*f.Height)
		for j := range c.noise[i] {
			seed = seed*1664525 + 1013904223 // Numerical Recipes' LCG
			c.noise[i][j] = int8(seed>>24)%9 - 4
		}
	}
	return c, nil
}

// ReadFrame waits for the pattern's next frame and adds this frame's noise.
func (c *Camera) ReadFrame(ctx context.Context) (*media.Frame, error) {
	f, err := c.TestPattern.ReadFrame(ctx)
	if err != nil {
		return nil, err
	}
	y := f.Image.Y
	for j, v := range c.noise[f.Seq%fields] {
		y[j] = byte(int(y[j]) + int(v))
	}
	return f, nil
}
