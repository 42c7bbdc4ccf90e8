// Package v4l2 is the intercom's camera on Video4Linux2, through
// github.com/blackjack/webcam (pure Go ioctls, no cgo). It negotiates the
// best format the camera offers: H.264 passed through untouched (with SPS
// and PPS before every keyframe), else MJPEG or YUYV converted to I420 for
// the stream's encoders. When the camera vanishes it delivers a "camera
// unavailable" picture and reopens the device with backoff.
//
// The device itself sits behind the small Device interface, so format
// negotiation, conversion, passthrough framing and the reopen logic are
// tested without a camera.
package v4l2

import (
	"errors"
	"fmt"
	"time"

	"github.com/blackjack/webcam"
)

// PixFmt is a V4L2 pixel format code (a FourCC, videodev2.h).
type PixFmt uint32

func fourcc(s string) PixFmt {
	return PixFmt(uint32(s[0]) | uint32(s[1])<<8 | uint32(s[2])<<16 | uint32(s[3])<<24)
}

// The formats the intercom takes.
var (
	H264  = fourcc("H264")
	MJPEG = fourcc("MJPG")
	JPEG  = fourcc("JPEG") // older drivers' name for MJPEG
	YUYV  = fourcc("YUYV")
)

func (f PixFmt) String() string {
	b := []byte{byte(f), byte(f >> 8), byte(f >> 16), byte(f >> 24)}
	return string(b)
}

// Device is what the camera needs of a V4L2 capture device.
type Device interface {
	// Formats lists the pixel formats the device offers, with its names.
	Formats() map[PixFmt]string
	// SetFormat asks for a format and size; the driver may adjust the
	// size, and the size it chose is returned.
	SetFormat(f PixFmt, width, height int) (w, h int, err error)
	SetFPS(fps int) error
	Start() error
	// ReadFrame waits up to timeout for the next frame. The bytes stay
	// valid until the next call.
	ReadFrame(timeout time.Duration) ([]byte, error)
	// ForceKeyFrame asks the camera's encoder for an IDR frame.
	ForceKeyFrame() error
	Close() error
}

// Opener opens a device by path; OpenWebcam is the real one.
type Opener func(path string) (Device, error)

// ErrTimeout is returned by ReadFrame when no frame came in time.
var ErrTimeout = errors.New("v4l2: no frame in time")

// ErrNoFormat is returned when the camera offers no usable format.
var ErrNoFormat = errors.New("v4l2: no usable pixel format")

// V4L2 codec controls (videodev2.h / v4l2-controls.h): V4L2_CID_CODEC_BASE
// is 0x00990900.
const (
	cidForceKeyFrame        = 0x00990900 + 229 // V4L2_CID_MPEG_VIDEO_FORCE_KEY_FRAME
	cidH264Profile          = 0x00990900 + 363 // V4L2_CID_MPEG_VIDEO_H264_PROFILE
	cidH264IPeriod          = 0x00990900 + 358 // V4L2_CID_MPEG_VIDEO_H264_I_PERIOD
	h264ConstrainedBaseline = 1                // V4L2_MPEG_VIDEO_H264_PROFILE_CONSTRAINED_BASELINE
)

// webcamDevice adapts *webcam.Webcam.
type webcamDevice struct {
	cam *webcam.Webcam
	buf []byte
}

// OpenWebcam opens a V4L2 capture device with blackjack/webcam.
func OpenWebcam(path string) (Device, error) {
	cam, err := webcam.Open(path)
	if err != nil {
		return nil, fmt.Errorf("open camera %s: %w", path, err)
	}
	return &webcamDevice{cam: cam}, nil
}

func (d *webcamDevice) Formats() map[PixFmt]string {
	out := map[PixFmt]string{}
	for f, name := range d.cam.GetSupportedFormats() {
		out[PixFmt(f)] = name
	}
	return out
}

func (d *webcamDevice) SetFormat(f PixFmt, width, height int) (int, int, error) {
	// webcam.SetImageFormat returns the size asked for, not the one the
	// driver chose (v0.6.1); the frame sizes it lists tell which exist,
	// so the closest listed size is asked for.
	w, h := closestSize(d.cam.GetSupportedFrameSizes(webcam.PixelFormat(f)), width, height)
	if _, _, _, err := d.cam.SetImageFormat(webcam.PixelFormat(f), uint32(w), uint32(h)); err != nil {
		return 0, 0, fmt.Errorf("set format %s %dx%d: %w", f, w, h, err)
	}
	if f == H264 {
		// Phones decode constrained baseline, which is what the intercom
		// offers (42e01f); ask for it and for a keyframe every 2 s. Not every
		// camera has these controls: errors are not fatal.
		_ = d.cam.SetControl(cidH264Profile, h264ConstrainedBaseline)
		_ = d.cam.SetControl(cidH264IPeriod, 60)
	}
	return w, h, nil
}

func closestSize(sizes []webcam.FrameSize, width, height int) (int, int) {
	bestW, bestH, best := width, height, -1
	for _, s := range sizes {
		w := clampStep(width, int(s.MinWidth), int(s.MaxWidth), int(s.StepWidth))
		h := clampStep(height, int(s.MinHeight), int(s.MaxHeight), int(s.StepHeight))
		d := abs(w-width) + abs(h-height)
		if best < 0 || d < best {
			bestW, bestH, best = w, h, d
		}
	}
	return bestW, bestH
}

func clampStep(v, lo, hi, step int) int {
	v = min(max(v, lo), hi)
	if step > 1 {
		v = lo + (v-lo)/step*step
	}
	return v
}

func abs(v int) int {
	if v < 0 {
		return -v
	}
	return v
}

func (d *webcamDevice) SetFPS(fps int) error { return d.cam.SetFramerate(float32(fps)) }

func (d *webcamDevice) Start() error {
	_ = d.cam.SetBufferCount(4)
	return d.cam.StartStreaming()
}

func (d *webcamDevice) ReadFrame(timeout time.Duration) ([]byte, error) {
	secs := uint32(max(timeout.Round(time.Second)/time.Second, 1))
	if err := d.cam.WaitForFrame(secs); err != nil {
		var te *webcam.Timeout
		if errors.As(err, &te) {
			return nil, ErrTimeout
		}
		return nil, err
	}
	frame, index, err := d.cam.GetFrame()
	if err != nil {
		return nil, err
	}
	// The mmap'ed buffer goes back to the driver at once; the copy is
	// what the caller keeps until its next call.
	d.buf = append(d.buf[:0], frame...)
	if err := d.cam.ReleaseFrame(index); err != nil {
		return nil, err
	}
	if len(d.buf) == 0 {
		return nil, ErrTimeout
	}
	return d.buf, nil
}

func (d *webcamDevice) ForceKeyFrame() error { return d.cam.SetControl(cidForceKeyFrame, 1) }

func (d *webcamDevice) Close() error { return d.cam.Close() }
