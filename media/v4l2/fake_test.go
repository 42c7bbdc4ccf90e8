package v4l2

import (
	"bytes"
	"errors"
	"image"
	"image/jpeg"
	"sync"
	"time"
)

// fakeDevice is a hand-written V4L2 device: it offers formats and produces
// frames of one colour, and can vanish (every call fails, as after a USB
// unplug) and come back.
type fakeDevice struct {
	w        *fakeWorld
	mode     PixFmt
	width    int
	height   int
	started  bool
	closed   bool
	keyForce int
	n        int
}

// fakeWorld is the machine the camera is plugged into.
type fakeWorld struct {
	mu      sync.Mutex
	formats map[PixFmt]string
	gone    bool
	opens   int
	frameY  byte
	au      func(n int) []byte // H.264 access unit number n
	dropDHT bool
	devs    []*fakeDevice
}

func (w *fakeWorld) open(path string) (Device, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.gone {
		return nil, errors.New("no such device")
	}
	w.opens++
	d := &fakeDevice{w: w}
	w.devs = append(w.devs, d)
	return d, nil
}

func (w *fakeWorld) setGone(g bool) {
	w.mu.Lock()
	w.gone = g
	w.mu.Unlock()
}

func (d *fakeDevice) Formats() map[PixFmt]string { return d.w.formats }

func (d *fakeDevice) SetFormat(f PixFmt, width, height int) (int, int, error) {
	d.mode, d.width, d.height = f, width, height
	return width, height, nil
}

func (d *fakeDevice) SetFPS(int) error { return nil }
func (d *fakeDevice) Start() error     { d.started = true; return nil }

func (d *fakeDevice) ReadFrame(timeout time.Duration) ([]byte, error) {
	d.w.mu.Lock()
	gone, y := d.w.gone, d.w.frameY
	d.w.mu.Unlock()
	if gone {
		return nil, errors.New("read: no such device")
	}
	time.Sleep(5 * time.Millisecond)
	d.n++
	switch d.mode {
	case YUYV:
		return yuyvFrame(d.width, d.height, y, 90, 240), nil
	case MJPEG:
		return jpegFrame(d.width, d.height, y, d.w.dropDHT), nil
	case H264:
		return d.w.au(d.n), nil
	}
	return nil, errors.New("bad mode")
}

func (d *fakeDevice) ForceKeyFrame() error { d.keyForce++; return nil }
func (d *fakeDevice) Close() error         { d.closed = true; return nil }

func yuyvFrame(w, h int, y, u, v byte) []byte {
	b := make([]byte, 0, w*h*2)
	for i := 0; i < w*h/2; i++ {
		b = append(b, y, u, y, v)
	}
	return b
}

func jpegFrame(w, h int, y byte, dropDHT bool) []byte {
	img := image.NewYCbCr(image.Rect(0, 0, w, h), image.YCbCrSubsampleRatio422)
	for i := range img.Y {
		img.Y[i] = y
	}
	for i := range img.Cb {
		img.Cb[i], img.Cr[i] = 90, 240
	}
	var b bytes.Buffer
	if err := jpeg.Encode(&b, img, &jpeg.Options{Quality: 90}); err != nil {
		panic(err)
	}
	data := b.Bytes()
	if !dropDHT {
		return data
	}
	// Cut the DHT segments out, as UVC cameras send MJPEG.
	out := append([]byte{}, data[:2]...)
	for i := 2; i+3 < len(data); {
		marker := data[i+1]
		n := int(data[i+2])<<8 | int(data[i+3])
		if marker == 0xda {
			out = append(out, data[i:]...)
			break
		}
		if marker != 0xc4 {
			out = append(out, data[i:i+2+n]...)
		}
		i += 2 + n
	}
	return out
}
