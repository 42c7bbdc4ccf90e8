package media

import (
	"context"
	"fmt"
	"image"
	"time"
)

// TestPattern is a synthetic VideoSource: colour bars, a box that sweeps
// across them, and the wall-clock time (HH:MM:SS.mmm, local time) and frame
// counter printed into the picture, so that a viewer can read end-to-end
// latency and dropped frames off the screen; the same time is drawn as a
// glass code (glasscode.go) in the top-right corner for a machine to read
// back. Rendering is a copy of a prepared background plus a few small
// fills: cheap enough for a Pi.
type TestPattern struct {
	format VideoFormat
	bg     *image.YCbCr // bars, prepared once
	frame  Frame
	pace   *pacer
	text   []byte
}

// 75 % colour bars (ITU-R BT.801 order: white, yellow, cyan, green,
// magenta, red, blue, black) in BT.601 limited-range YCbCr.
var bars = [8][3]byte{
	{180, 128, 128},
	{162, 44, 142},
	{131, 156, 44},
	{112, 72, 58},
	{84, 184, 198},
	{65, 100, 212},
	{35, 212, 114},
	{16, 128, 128},
}

// NewTestPattern returns a test pattern of the given format.
func NewTestPattern(f VideoFormat) (*TestPattern, error) {
	if !f.valid() {
		return nil, fmt.Errorf("test pattern %dx%d@%d: %w", f.Width, f.Height, f.FPS, ErrBadFormat)
	}
	rect := image.Rect(0, 0, f.Width, f.Height)
	bg := image.NewYCbCr(rect, image.YCbCrSubsampleRatio420)
	for y := 0; y < f.Height; y++ {
		for x := 0; x < f.Width; x++ {
			b := bars[x*len(bars)/f.Width]
			if y >= f.Height*3/4 {
				// A luma ramp under the bars shows banding and scaling.
				b = [3]byte{byte(16 + x*219/f.Width), 128, 128}
			}
			bg.Y[y*bg.YStride+x] = b[0]
			if x%2 == 0 && y%2 == 0 {
				ci := (y/2)*bg.CStride + x/2
				bg.Cb[ci], bg.Cr[ci] = b[1], b[2]
			}
		}
	}
	return &TestPattern{
		format: f,
		bg:     bg,
		frame:  Frame{Image: image.NewYCbCr(rect, image.YCbCrSubsampleRatio420)},
		pace:   newPacer(f.Interval()),
		text:   make([]byte, 0, 32),
	}, nil
}

// Format returns the pattern's format.
func (p *TestPattern) Format() VideoFormat { return p.format }

// ReadFrame waits for the next frame time and renders the frame.
func (p *TestPattern) ReadFrame(ctx context.Context) (*Frame, error) {
	now, err := p.pace.wait(ctx)
	if err != nil {
		return nil, err
	}
	p.Render(now)
	return &p.frame, nil
}

// Render draws the next frame for time now into the pattern's buffer
// without waiting, and returns it.
func (p *TestPattern) Render(now time.Time) *Frame {
	f := &p.frame
	img := f.Image
	copy(img.Y, p.bg.Y)
	copy(img.Cb, p.bg.Cb)
	copy(img.Cr, p.bg.Cr)
	w, h := p.format.Width, p.format.Height

	// The box bounces across the bars, one sweep every four seconds.
	side := max(h/8, 2) &^ 1
	span := w - side
	period := 4 * p.format.FPS
	pos := int(f.Seq % uint64(2*period))
	if pos >= period {
		pos = 2*period - pos
	}
	bx := (span * pos / period) &^ 1
	by := (h*5/8 - side/2) &^ 1
	fillRect(img.Y, img.YStride, w, h, bx, by, side, side, 235)
	fillRect(img.Cb, img.CStride, w/2, h/2, bx/2, by/2, side/2, side/2, 128)
	fillRect(img.Cr, img.CStride, w/2, h/2, bx/2, by/2, side/2, side/2, 128)

	scale := max(h/120, 1)
	p.text = appendClock(p.text[:0], now)
	tx, ty := 2*scale, 2*scale
	drawText(img.Y, img.YStride, w, h, tx, ty, scale, p.text)
	p.text = appendCounter(p.text[:0], f.Seq)
	drawText(img.Y, img.YStride, w, h, tx, ty+(glyphH+3)*scale, scale, p.text)
	// Neutral chroma under the text boxes keeps the digits grey on black.
	boxH := (2*glyphH + 5) * scale
	boxW := (12*(glyphW+1) + 1) * scale
	fillRect(img.Cb, img.CStride, w/2, h/2, (tx-scale)/2, (ty-scale)/2, (boxW+1)/2+1, (boxH+1)/2+1, 128)
	fillRect(img.Cr, img.CStride, w/2, h/2, (tx-scale)/2, (ty-scale)/2, (boxW+1)/2+1, (boxH+1)/2+1, 128)
	DrawGlassCode(img, GlassCodeMillis(now))

	f.Time = now
	f.Seq++
	return f
}

// Close releases nothing; it exists to satisfy VideoSource.
func (p *TestPattern) Close() error {
	p.pace.stop()
	return nil
}

// appendClock appends HH:MM:SS.mmm without allocating.
func appendClock(b []byte, t time.Time) []byte {
	hh, mm, ss := t.Clock()
	ms := t.Nanosecond() / 1e6
	b = append2(b, hh)
	b = append(b, ':')
	b = append2(b, mm)
	b = append(b, ':')
	b = append2(b, ss)
	b = append(b, '.', byte('0'+ms/100), byte('0'+ms/10%10), byte('0'+ms%10))
	return b
}

func append2(b []byte, v int) []byte { return append(b, byte('0'+v/10), byte('0'+v%10)) }

// appendCounter appends "#" and the counter, zero-padded to seven digits.
func appendCounter(b []byte, n uint64) []byte {
	var d [20]byte
	i := len(d)
	for n > 0 || i > len(d)-7 {
		i--
		d[i] = byte('0' + n%10)
		n /= 10
	}
	b = append(b, '#')
	return append(b, d[i:]...)
}
