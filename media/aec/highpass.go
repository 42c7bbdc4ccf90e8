package aec

import "math"

// highPass is a second-order Butterworth high-pass (a biquad), the
// wind and handling-noise filter for the Speex path; WebRTC has its own.
// State is kept in float64 so the filter stays quiet at low cutoffs.
type highPass struct {
	b0, b1, b2, a1, a2 float64
	x1, x2, y1, y2     float64
}

// newHighPass designs the filter for cutoff Hz at rate Hz by the bilinear
// transform with Q = 1/√2 (maximally flat pass band).
func newHighPass(cutoff, rate float64) *highPass {
	w := 2 * math.Pi * cutoff / rate
	alpha := math.Sin(w) / math.Sqrt2
	c := math.Cos(w)
	a0 := 1 + alpha
	return &highPass{
		b0: (1 + c) / 2 / a0,
		b1: -(1 + c) / a0,
		b2: (1 + c) / 2 / a0,
		a1: -2 * c / a0,
		a2: (1 - alpha) / a0,
	}
}

func (h *highPass) filter(pcm []int16) {
	for i, s := range pcm {
		x := float64(s)
		y := h.b0*x + h.b1*h.x1 + h.b2*h.x2 - h.a1*h.y1 - h.a2*h.y2
		h.x2, h.x1 = h.x1, x
		h.y2, h.y1 = h.y1, y
		pcm[i] = clamp16(y)
	}
}

func clamp16(v float64) int16 {
	switch {
	case v > math.MaxInt16:
		return math.MaxInt16
	case v < math.MinInt16:
		return math.MinInt16
	}
	return int16(math.Round(v))
}
