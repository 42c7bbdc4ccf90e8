package media

import (
	"fmt"
	"image"
	"time"
)

// Placeholder renders the picture sent while the camera is unavailable
// (unplugged, driver error): "CAMERA UNAVAILABLE" and the running clock on
// dark grey, so a resident sees at once that the door's intercom is alive
// and what is wrong, rather than a frozen or black picture.
type Placeholder struct {
	format VideoFormat
	frame  Frame
	text   []byte
}

var unavailableText = []byte("CAMERA UNAVAILABLE")

// NewPlaceholder returns a placeholder of format f.
func NewPlaceholder(f VideoFormat) (*Placeholder, error) {
	if !f.valid() {
		return nil, fmt.Errorf("placeholder %dx%d: %w", f.Width, f.Height, ErrBadFormat)
	}
	img := image.NewYCbCr(image.Rect(0, 0, f.Width, f.Height), image.YCbCrSubsampleRatio420)
	return &Placeholder{format: f, frame: Frame{Image: img}, text: make([]byte, 0, 16)}, nil
}

// Render draws the placeholder for time now and returns it; the frame is
// reused by the next call.
func (p *Placeholder) Render(now time.Time) *Frame {
	img := p.frame.Image
	w, h := p.format.Width, p.format.Height
	fillRect(img.Y, img.YStride, w, h, 0, 0, w, h, 40)
	fillRect(img.Cb, img.CStride, w/2, h/2, 0, 0, w/2, h/2, 128)
	fillRect(img.Cr, img.CStride, w/2, h/2, 0, 0, w/2, h/2, 128)
	scale := max(w/(len(unavailableText)*(glyphW+1)+2)*3/4, 1)
	tw := len(unavailableText) * (glyphW + 1) * scale
	x, y := max((w-tw)/2, scale), max(h/2-glyphH*scale, scale)
	drawText(img.Y, img.YStride, w, h, x, y, scale, unavailableText)
	small := max(scale/2, 1)
	p.text = appendClock(p.text[:0], now)
	cw := len(p.text) * (glyphW + 1) * small
	drawText(img.Y, img.YStride, w, h, max((w-cw)/2, small), y+(glyphH+4)*scale, small, p.text)
	p.frame.Time = now
	p.frame.Seq++
	return &p.frame
}
