package v4l2

import (
	"context"
	"errors"
	"fmt"
	"image"
	"log/slog"
	"sync"
	"time"

	"github.com/doorbell/intercom/media"
)

// Config configures a Camera.
type Config struct {
	Device string // default /dev/video0
	// Format is camera.format: "auto", "h264", "mjpeg" or "yuyv".
	Format string
	// PassThrough allows H.264 from the camera to be sent as it is. The
	// stream must then be built without VP8 (which would need the camera's
	// H.264 decoded); see PassesThrough for deciding it at start.
	PassThrough bool
	// Open opens the device; default OpenWebcam.
	Open Opener
	// FrameTimeout is how long without a frame counts as the camera
	// having gone; default 2 s.
	FrameTimeout time.Duration
	// MinBackoff and MaxBackoff bound the wait between reopen attempts;
	// defaults 1 s and 30 s.
	MinBackoff, MaxBackoff time.Duration
	Logger                 *slog.Logger
}

// Status is the camera's state for the status API.
type Status struct {
	Available bool      `json:"available"` // as last seen
	Streaming bool      `json:"streaming"` // the device is open (video is wanted)
	Device    string    `json:"device"`
	Format    string    `json:"format,omitempty"` // pixel format in use
	Width     int       `json:"width,omitempty"`
	Height    int       `json:"height,omitempty"`
	Error     string    `json:"error,omitempty"` // why it is unavailable
	Since     time.Time `json:"since"`           // of the current state
	Reopens   uint64    `json:"reopens"`         // successful opens after a loss
	Frames    uint64    `json:"frames"`
}

// Camera is the door camera as a media.VideoSource. It never fails while
// running: when the device cannot be opened or stops delivering, frames
// become the "camera unavailable" picture (at the stream's rate) and the
// device is reopened with exponential backoff. Open it through
// Camera.OpenVideo (media.StreamConfig.OpenVideo); the device is held only
// while the stream's video runs.
type Camera struct {
	cfg Config
	log *slog.Logger

	// Owned by the goroutine reading frames (the stream's video runner).
	format      media.VideoFormat
	dev         Device
	mode        PixFmt
	conv        converter
	framer      h264Framer
	placeholder *media.Placeholder
	frame       media.Frame // raw pictures, converted into its buffer
	au          media.Frame // passthrough access units
	nextTry     time.Time
	backoff     time.Duration
	lost        bool // the device was open and went away
	pace        *time.Ticker
	seq         uint64

	mu      sync.Mutex
	status  Status
	keyWant bool
}

// NewCamera returns a camera; nothing is opened yet.
func NewCamera(cfg Config) *Camera {
	if cfg.Device == "" {
		cfg.Device = "/dev/video0"
	}
	if cfg.Open == nil {
		cfg.Open = OpenWebcam
	}
	if cfg.FrameTimeout <= 0 {
		cfg.FrameTimeout = 2 * time.Second
	}
	if cfg.MinBackoff <= 0 {
		cfg.MinBackoff = time.Second
	}
	if cfg.MaxBackoff < cfg.MinBackoff {
		cfg.MaxBackoff = max(30*time.Second, cfg.MinBackoff)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return &Camera{cfg: cfg, log: cfg.Logger, status: Status{Device: cfg.Device, Since: time.Now()}}
}

// Status returns the camera's state.
func (c *Camera) Status() Status {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.status
}

// OpenVideo prepares the camera for format f; the device itself is opened
// by the first ReadFrame, so a missing camera never stops the stream.
func (c *Camera) OpenVideo(f media.VideoFormat) (media.VideoSource, error) {
	p, err := media.NewPlaceholder(f)
	if err != nil {
		return nil, err
	}
	c.format, c.placeholder = f, p
	c.frame.Image = image.NewYCbCr(image.Rect(0, 0, f.Width, f.Height), image.YCbCrSubsampleRatio420)
	c.nextTry, c.backoff = time.Time{}, c.cfg.MinBackoff
	return c, nil
}

// RequestKeyFrame implements media.KeyFrameRequester: it asks the camera's
// encoder for an IDR frame (passthrough only).
func (c *Camera) RequestKeyFrame() {
	c.mu.Lock()
	c.keyWant = true
	c.mu.Unlock()
}

// ReadFrame implements media.VideoSource.
func (c *Camera) ReadFrame(ctx context.Context) (*media.Frame, error) {
	for {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		if c.dev == nil {
			if time.Now().Before(c.nextTry) || !c.tryOpen() {
				return c.unavailableFrame(ctx)
			}
		}
		f, err := c.capture()
		if err == nil {
			return f, nil
		}
		c.fail(err)
	}
}

// tryOpen opens and starts the device; on failure it schedules the next
// attempt.
func (c *Camera) tryOpen() bool {
	dev, w, h, mode, err := c.open()
	if err != nil {
		c.scheduleRetry(err)
		return false
	}
	c.dev, c.mode = dev, mode
	switch mode {
	case H264:
		c.conv = nil
		c.framer = h264Framer{}
		c.RequestKeyFrame()
	case YUYV:
		c.conv = yuyvConverter{w: w, h: h}
	default:
		c.conv = &mjpegConverter{}
	}
	c.backoff = c.cfg.MinBackoff
	c.mu.Lock()
	if c.lost {
		c.status.Reopens++
	}
	c.status.Available, c.status.Streaming, c.status.Error, c.status.Since = true, true, "", time.Now()
	c.status.Format, c.status.Width, c.status.Height = mode.String(), w, h
	c.mu.Unlock()
	c.log.Info("camera open", "device", c.cfg.Device, "format", mode.String(), "width", w, "height", h)
	return true
}

func (c *Camera) open() (Device, int, int, PixFmt, error) {
	dev, err := c.cfg.Open(c.cfg.Device)
	if err != nil {
		return nil, 0, 0, 0, err
	}
	mode, err := Negotiate(dev.Formats(), c.cfg.Format, c.cfg.PassThrough)
	if err == nil {
		var w, h int
		w, h, err = dev.SetFormat(mode, c.format.Width, c.format.Height)
		if err == nil {
			if ferr := dev.SetFPS(c.format.FPS); ferr != nil {
				c.log.Debug("camera frame rate not set", "err", ferr)
			}
			if err = dev.Start(); err == nil {
				return dev, w, h, mode, nil
			}
		}
	}
	_ = dev.Close()
	return nil, 0, 0, 0, err
}

func (c *Camera) capture() (*media.Frame, error) {
	c.mu.Lock()
	key := c.keyWant
	c.keyWant = false
	c.mu.Unlock()
	if key && c.mode == H264 {
		if err := c.dev.ForceKeyFrame(); err != nil {
			c.log.Debug("camera cannot force a keyframe", "err", err)
		}
	}
	data, err := c.dev.ReadFrame(c.cfg.FrameTimeout)
	if err != nil {
		return nil, fmt.Errorf("read camera frame: %w", err)
	}
	now := time.Now()
	c.seq++
	if c.mode == H264 {
		au, incomplete := c.framer.frame(data)
		if incomplete {
			c.RequestKeyFrame()
		}
		// An IDR that cannot be completed yet goes on as an empty access
		// unit, which the stream skips while it waits for a usable IDR.
		if au == nil {
			au = []byte{}
		}
		c.au = media.Frame{H264: au, Time: now, Seq: c.seq}
		c.count()
		return &c.au, nil
	}
	c.frame.Time, c.frame.Seq = now, c.seq
	if err := c.conv.convert(data, c.frame.Image); err != nil {
		// One corrupt frame (a USB hiccup) is not a lost camera.
		c.log.Debug("camera frame dropped", "err", err)
		// The previous picture is still in c.frame.Image: repeat it.
		return &c.frame, nil
	}
	c.count()
	return &c.frame, nil
}

func (c *Camera) count() {
	c.mu.Lock()
	c.status.Frames++
	c.mu.Unlock()
}

func (c *Camera) fail(err error) {
	c.log.Warn("camera lost", "device", c.cfg.Device, "err", err)
	if c.dev != nil {
		_ = c.dev.Close()
		c.dev = nil
	}
	c.lost = true
	c.scheduleRetry(err)
}

func (c *Camera) scheduleRetry(err error) {
	c.nextTry = time.Now().Add(c.backoff)
	c.mu.Lock()
	if c.status.Available || c.status.Error == "" {
		c.status.Since = time.Now()
	}
	c.status.Available, c.status.Streaming, c.status.Error = false, false, err.Error()
	c.mu.Unlock()
	c.log.Debug("camera retry scheduled", "in", c.backoff, "err", err)
	c.backoff = min(2*c.backoff, c.cfg.MaxBackoff)
}

// unavailableFrame waits for the next frame slot and renders the
// placeholder.
func (c *Camera) unavailableFrame(ctx context.Context) (*media.Frame, error) {
	if c.pace == nil {
		c.pace = time.NewTicker(c.format.Interval())
	}
	select {
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-c.pace.C:
	}
	c.seq++
	f := c.placeholder.Render(time.Now())
	f.Seq = c.seq
	return f, nil
}

// Close releases the device; the camera can be opened again.
func (c *Camera) Close() error {
	if c.pace != nil {
		c.pace.Stop()
		c.pace = nil
	}
	if c.dev == nil {
		return nil
	}
	err := c.dev.Close()
	c.dev = nil
	c.mu.Lock()
	c.status.Streaming = false
	c.mu.Unlock()
	return err
}

// Info describes a camera for installers (intercom hwtest).
type Info struct {
	Formats map[PixFmt]string
	Sizes   map[PixFmt][]string
}

// Probe opens the device, lists its formats and closes it.
func Probe(open Opener, path string) (map[PixFmt]string, error) {
	if open == nil {
		open = OpenWebcam
	}
	dev, err := open(path)
	if err != nil {
		return nil, err
	}
	defer dev.Close()
	f := dev.Formats()
	if len(f) == 0 {
		return nil, errors.New("camera lists no formats")
	}
	return f, nil
}
