package media

import (
	"bytes"
	"context"
	"errors"
	"image/jpeg"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// scriptedCamera is a VideoSource that plays a script: passthrough H.264
// access units or raw frames (as the V4L2 camera does while its device is
// gone), one per 10 ms.
type scriptedCamera struct {
	mu       sync.Mutex
	raw      bool // deliver raw frames now
	seq      uint64
	gop      int // access units since the last IDR
	keyAsked atomic.Int64
	pat      *TestPattern
	frame    Frame
}

var (
	auIDR   = []byte{0, 0, 0, 1, 0x67, 1, 0, 0, 0, 1, 0x68, 2, 0, 0, 0, 1, 0x65, 3}
	auSlice = []byte{0, 0, 0, 1, 0x41, 4}
)

func (c *scriptedCamera) ReadFrame(ctx context.Context) (*Frame, error) {
	select {
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-time.After(10 * time.Millisecond):
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.seq++
	if c.raw {
		return c.pat.Render(time.Now()), nil
	}
	// The camera's GOP: an IDR every 10 access units, and the first one
	// of a stream is an inter frame (joined mid-GOP).
	au := auSlice
	if c.gop == 10 {
		au, c.gop = auIDR, 0
	}
	c.gop++
	c.frame = Frame{H264: au, Time: time.Now(), Seq: c.seq}
	return &c.frame, nil
}

func (c *scriptedCamera) RequestKeyFrame() {
	c.keyAsked.Add(1)
	c.mu.Lock()
	c.gop = 10
	c.mu.Unlock()
}

func (c *scriptedCamera) setRaw(raw bool) {
	c.mu.Lock()
	c.raw = raw
	c.mu.Unlock()
}

func (c *scriptedCamera) Close() error { return nil }

// TestStreamPassesH264Through: while the camera delivers H.264 no encoder
// runs and access units reach the track untouched, starting at an IDR (the
// camera is asked for one); while it delivers raw frames (its placeholder)
// the encoder takes over; when H.264 is back the encoder stops again.
func TestStreamPassesH264Through(t *testing.T) {
	fk := newFakes()
	pat, err := NewTestPattern(VideoFormat{Width: 64, Height: 48, FPS: 50})
	if err != nil {
		t.Fatal(err)
	}
	cam := &scriptedCamera{pat: pat, gop: 3}
	s, err := NewStream(StreamConfig{Width: 64, Height: 48, FPS: 50, Encoders: fk.encoders(), MinKeyFrameGap: 30 * time.Millisecond,
		OpenVideo: func(VideoFormat) (VideoSource, error) { return cam, nil }})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	release, err := s.Acquire(H264)
	if err != nil {
		t.Fatal(err)
	}
	defer release()
	waitFor(t, "passthrough frames", func() bool { return stats(s, H264).Passthrough >= 15 })
	st := stats(s, H264)
	if fk.live[H264].Load() != 0 || st.Starts != 0 {
		t.Fatalf("an encoder ran during passthrough: %+v", st)
	}
	if cam.keyAsked.Load() == 0 {
		t.Fatal("the camera was never asked for the new viewer's keyframe")
	}
	if st.KeyFrames == 0 || st.Frames != st.Passthrough {
		t.Fatalf("stats %+v", st)
	}

	cam.setRaw(true) // the camera vanished: the placeholder is encoded
	waitFor(t, "encoder", func() bool { return fk.live[H264].Load() == 1 && stats(s, H264).Frames > st.Frames+3 })
	asked := cam.keyAsked.Load()
	cam.setRaw(false)
	waitFor(t, "encoder stopped", func() bool { return fk.live[H264].Load() == 0 })
	waitFor(t, "passthrough again", func() bool { return stats(s, H264).Passthrough > st.Passthrough+5 })
	if cam.keyAsked.Load() == asked {
		t.Fatal("no keyframe asked of the camera after the switch back")
	}
	if st := stats(s, H264); st.Errors != 0 {
		t.Fatalf("errors: %+v", st)
	}
}

func TestSnapshotWithoutCall(t *testing.T) {
	fk := newFakes()
	s := newTestStream(t, fk)
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	for i := 0; i < 2; i++ { // the source opens, closes, and opens again
		b, err := s.Snapshot(ctx)
		if err != nil {
			t.Fatal(err)
		}
		img, err := jpeg.Decode(bytes.NewReader(b))
		if err != nil {
			t.Fatal(err)
		}
		if img.Bounds().Dx() != 64 || img.Bounds().Dy() != 48 {
			t.Fatalf("snapshot %v", img.Bounds())
		}
	}
	if s.video.running() {
		t.Fatal("video source left running after the snapshot")
	}
	for _, e := range s.Stats() {
		if e.Starts != 0 {
			t.Fatalf("a snapshot started an encoder: %+v", e)
		}
	}
}

func TestSnapshotDuringCall(t *testing.T) {
	fk := newFakes()
	s := newTestStream(t, fk)
	release, err := s.Acquire(VP8)
	if err != nil {
		t.Fatal(err)
	}
	defer release()
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := s.Snapshot(t.Context()); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	if stats(s, VP8).Starts != 1 {
		t.Fatal("snapshot disturbed the running encoder")
	}
}

func TestSnapshotOfPassthroughCamera(t *testing.T) {
	cam := &scriptedCamera{}
	s, err := NewStream(StreamConfig{Width: 64, Height: 48, FPS: 50, Encoders: newFakes().encoders(),
		OpenVideo: func(VideoFormat) (VideoSource, error) { return cam, nil }})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, err := s.Snapshot(t.Context()); !errors.Is(err, ErrNoPicture) {
		t.Fatalf("snapshot of an H.264 camera: %v, want ErrNoPicture", err)
	}
}

func TestSnapshotSourceFails(t *testing.T) {
	s, err := NewStream(StreamConfig{Width: 64, Height: 48, FPS: 50, Encoders: newFakes().encoders(),
		OpenVideo: func(VideoFormat) (VideoSource, error) { return nil, errors.New("no camera") }})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, err := s.Snapshot(t.Context()); err == nil {
		t.Fatal("snapshot without a source succeeded")
	}
}

func TestPlaceholderRenders(t *testing.T) {
	p, err := NewPlaceholder(VideoFormat{Width: 640, Height: 480, FPS: 15})
	if err != nil {
		t.Fatal(err)
	}
	f := p.Render(time.Now())
	bright := 0
	for _, v := range f.Image.Y {
		if v > 200 {
			bright++
		}
	}
	if bright < 1000 {
		t.Fatalf("placeholder text not drawn (%d bright pixels)", bright)
	}
}
