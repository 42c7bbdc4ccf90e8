package codec

import (
	"bytes"
	"context"
	"image/jpeg"
	"sync/atomic"
	"testing"
	"time"

	"github.com/doorbell/intercom/media"
)

// h264Camera is a passthrough source: the test pattern encoded by our own
// H.264 encoder, delivered as a V4L2 camera's access units. Its GOP is
// gop frames; it honours keyframe requests only if obey is set.
type h264Camera struct {
	pat   *media.TestPattern
	enc   media.VideoEncoder
	gop   int
	obey  bool
	n     int
	key   atomic.Bool
	asked atomic.Int64
	idrs  atomic.Int64 // IDR access units made so far
	frame media.Frame
	pace  *time.Ticker
}

func newH264Camera(t *testing.T, f media.VideoFormat, gop int, obey bool) *h264Camera {
	t.Helper()
	pat, err := media.NewTestPattern(f)
	if err != nil {
		t.Fatal(err)
	}
	// A long encoder GOP: keyframes come only when this camera forces them.
	enc, err := NewH264(media.VideoEncoderConfig{VideoFormat: f, Bitrate: 800_000, KeyFrameInterval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	return &h264Camera{pat: pat, enc: enc, gop: gop, obey: obey, pace: time.NewTicker(f.Interval())}
}

func (c *h264Camera) ReadFrame(ctx context.Context) (*media.Frame, error) {
	select {
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-c.pace.C:
	}
	raw := c.pat.Render(time.Now())
	key := c.n%c.gop == 0 || c.key.Swap(false)
	if key {
		c.idrs.Add(1)
	}
	c.n++
	au, err := c.enc.Encode(raw.Image, key)
	if err != nil {
		return nil, err
	}
	c.frame = media.Frame{H264: au, Time: raw.Time, Seq: uint64(c.n)}
	return &c.frame, nil
}

func (c *h264Camera) RequestKeyFrame() {
	c.asked.Add(1)
	if c.obey {
		c.key.Store(true)
	}
}

func (c *h264Camera) Close() error { c.pace.Stop(); return c.enc.Close() }

func passthroughStream(t *testing.T, cam *h264Camera, f media.VideoFormat) *media.Stream {
	t.Helper()
	enc := Encoders()
	enc.VP8 = nil // as the daemon builds it for a passthrough camera
	s, err := media.NewStream(media.StreamConfig{Width: f.Width, Height: f.Height, FPS: f.FPS, Encoders: enc,
		OpenVideo: func(media.VideoFormat) (media.VideoSource, error) { return cam, nil }})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// checkJPEG decodes a snapshot and compares its luma with the test
// pattern's bars (the clock text aside).
func checkJPEG(t *testing.T, b []byte, f media.VideoFormat) {
	t.Helper()
	img, err := jpeg.Decode(bytes.NewReader(b))
	if err != nil {
		t.Fatalf("snapshot is no JPEG: %v", err)
	}
	if got := img.Bounds(); got.Dx() != f.Width || got.Dy() != f.Height {
		t.Fatalf("snapshot %v, want %dx%d", got, f.Width, f.Height)
	}
	pat, _ := media.NewTestPattern(f)
	want := pat.Render(time.Now()).Image
	var diff, n int
	// The lower half: bars and the luma ramp, away from the text.
	for y := f.Height / 2; y < f.Height; y += 5 {
		for x := 0; x < f.Width; x += 5 {
			r, g, bb, _ := img.At(x, y).RGBA()
			// BT.601 luma of the JPEG's pixel, studio range like the source.
			yy := 16 + (65.738*float64(r>>8)+129.057*float64(g>>8)+25.064*float64(bb>>8))/256
			d := int(yy) - int(want.Y[y*want.YStride+x])
			diff += max(d, -d)
			n++
		}
	}
	if mean := float64(diff) / float64(n); mean > 10 {
		t.Errorf("snapshot differs from the pattern: mean luma difference %.1f", mean)
	}
}

func TestSnapshotOfH264Camera(t *testing.T) {
	f := media.VideoFormat{Width: 640, Height: 480, FPS: 15}

	t.Run("without a call", func(t *testing.T) {
		cam := newH264Camera(t, f, 45, true)
		s := passthroughStream(t, cam, f)
		ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
		defer cancel()
		b, err := s.Snapshot(ctx)
		if err != nil {
			t.Fatal(err)
		}
		checkJPEG(t, b, f)
	})

	t.Run("during a call, the camera asked for a keyframe", func(t *testing.T) {
		cam := newH264Camera(t, f, 45, true)
		s := passthroughStream(t, cam, f)
		release, err := s.Acquire(media.H264)
		if err != nil {
			t.Fatal(err)
		}
		defer release()
		time.Sleep(700 * time.Millisecond) // mid-GOP
		asked := cam.asked.Load()
		idrs := cam.idrs.Load()
		b, err := s.Snapshot(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		checkJPEG(t, b, f)
		if cam.asked.Load() == asked {
			t.Error("no keyframe asked of the camera")
		}
		// The IDR asked for, not the GOP's next one 45 frames later
		// (counted in frames: a busy machine slows the clock and the
		// camera alike).
		if now := cam.idrs.Load(); now != idrs+1 {
			t.Errorf("the camera made %d IDRs before the snapshot, want the 1 asked for", now-idrs)
		}
	})

	t.Run("a camera that ignores keyframe requests: its last IDR", func(t *testing.T) {
		cam := newH264Camera(t, f, 45, false) // an IDR every 3 s
		s := passthroughStream(t, cam, f)
		release, err := s.Acquire(media.H264)
		if err != nil {
			t.Fatal(err)
		}
		defer release()
		time.Sleep(700 * time.Millisecond)
		t0 := time.Now()
		idrs := cam.idrs.Load()
		b, err := s.Snapshot(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		// Counted in the camera's frames, not in time (a busy machine
		// slows both): the kept IDR is served a few frames after the
		// request, the camera's next one is 45 frames away.
		if now := cam.idrs.Load(); now != idrs {
			t.Errorf("the camera made %d more IDRs before the snapshot (%v): want the kept IDR, not the next one", now-idrs, time.Since(t0))
		}
		checkJPEG(t, b, f)
	})
}
