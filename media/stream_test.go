package media

import (
	"context"
	"errors"
	"image"
	"math"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	pionmedia "github.com/pion/webrtc/v4/pkg/media"
)

// fakeVideo is a hand-written VideoEncoder: a keyframe (H.264 IDR NAL) when
// asked or first, else a non-IDR slice.
type fakeVideo struct {
	codec  Codec
	frames int
	live   *atomic.Int64
	forced *atomic.Int64
	rate   *atomic.Int64 // the target, as set at start and by SetBitrate
	// encodes counts Encode calls of every fake of the codec.
	encodes *atomic.Int64
	closed  bool
}

func (f *fakeVideo) SetBitrate(bps int) error {
	f.rate.Store(int64(bps))
	return nil
}

func (f *fakeVideo) Encode(img *image.YCbCr, key bool) ([]byte, error) {
	if img == nil {
		return nil, errors.New("nil frame")
	}
	first := f.frames == 0
	f.frames++
	if f.encodes != nil {
		f.encodes.Add(1)
	}
	if key {
		f.forced.Add(1)
	}
	if f.codec == VP8 {
		if key || first {
			return []byte{0x10, 1, 2}, nil
		}
		return []byte{0x11, 1, 2}, nil
	}
	if key || first {
		return []byte{0, 0, 0, 1, 0x65, 1, 2}, nil
	}
	return []byte{0, 0, 0, 1, 0x41, 1, 2}, nil
}

func (f *fakeVideo) Close() error {
	if !f.closed {
		f.closed = true
		f.live.Add(-1)
	}
	return nil
}

type fakeAudio struct{ live *atomic.Int64 }

func (f *fakeAudio) Encode(pcm []int16) ([]byte, error) { return []byte{1, 2, 3}, nil }
func (f *fakeAudio) Close() error                       { f.live.Add(-1); return nil }

type fakes struct {
	live    map[Codec]*atomic.Int64
	rate    map[Codec]*atomic.Int64 // the video encoders' targets
	encodes map[Codec]*atomic.Int64
	forced  atomic.Int64
}

func newFakes() *fakes {
	return &fakes{live: map[Codec]*atomic.Int64{H264: {}, VP8: {}, Opus: {}}, rate: map[Codec]*atomic.Int64{H264: {}, VP8: {}},
		encodes: map[Codec]*atomic.Int64{H264: {}, VP8: {}}}
}

func (fk *fakes) encoders() Encoders {
	video := func(c Codec) func(VideoEncoderConfig) (VideoEncoder, error) {
		return func(cfg VideoEncoderConfig) (VideoEncoder, error) {
			if cfg.Bitrate <= 0 || cfg.Width != 64 {
				return nil, errors.New("bad config")
			}
			fk.live[c].Add(1)
			fk.rate[c].Store(int64(cfg.Bitrate))
			return &fakeVideo{codec: c, live: fk.live[c], forced: &fk.forced, rate: fk.rate[c], encodes: fk.encodes[c]}, nil
		}
	}
	return Encoders{
		H264: video(H264),
		VP8:  video(VP8),
		Opus: func(AudioEncoderConfig) (AudioEncoder, error) {
			fk.live[Opus].Add(1)
			return &fakeAudio{live: fk.live[Opus]}, nil
		},
	}
}

func newTestStream(t *testing.T, fk *fakes) *Stream {
	t.Helper()
	s, err := NewStream(StreamConfig{Width: 64, Height: 48, FPS: 50, Encoders: fk.encoders(), MinKeyFrameGap: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func stats(s *Stream, c Codec) EncoderStats {
	for _, e := range s.Stats() {
		if e.Codec == c {
			return e
		}
	}
	return EncoderStats{}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestStreamTracks(t *testing.T) {
	s := newTestStream(t, newFakes())
	for _, c := range []Codec{H264, VP8, Opus} {
		tr := s.Track(c)
		if tr == nil {
			t.Fatalf("no %s track", c)
		}
		if tr.StreamID() != "doorcam" {
			t.Errorf("%s stream ID %q", c, tr.StreamID())
		}
	}
	if s.Track(H264).ID() != "doorcam-video" || s.Track(VP8).ID() != "doorcam-video" || s.Track(Opus).ID() != "doorcam-audio" {
		t.Error("unexpected track IDs")
	}
	if s.Track("video/AV1") != nil {
		t.Error("track for unknown codec")
	}
}

func TestStreamIdleRunsNothing(t *testing.T) {
	fk := newFakes()
	s := newTestStream(t, fk)
	time.Sleep(50 * time.Millisecond)
	for _, e := range s.Stats() {
		if e.Running || e.Frames != 0 || e.Starts != 0 {
			t.Errorf("%s active while idle: %+v", e.Codec, e)
		}
	}
}

func TestStreamOneEncoderPerCodec(t *testing.T) {
	fk := newFakes()
	s := newTestStream(t, fk)
	var releases []func()
	for i := 0; i < 4; i++ {
		for _, c := range []Codec{H264, Opus} {
			r, err := s.Acquire(c)
			if err != nil {
				t.Fatal(err)
			}
			releases = append(releases, r)
		}
	}
	waitFor(t, "frames", func() bool { return stats(s, H264).Frames >= 5 && stats(s, Opus).Frames >= 3 })
	for _, c := range []Codec{H264, Opus} {
		if n := fk.live[c].Load(); n != 1 {
			t.Errorf("%s: %d encoders, want 1", c, n)
		}
		if st := stats(s, c); st.Users != 4 || st.Starts != 1 || !st.Running {
			t.Errorf("%s: %+v", c, st)
		}
	}
	if n := fk.live[VP8].Load(); n != 0 {
		t.Errorf("VP8 running without users")
	}
	for _, r := range releases[:len(releases)-2] {
		r()
		r() // idempotent
	}
	if !stats(s, H264).Running {
		t.Error("H264 stopped while a user remains")
	}
	for _, r := range releases[len(releases)-2:] {
		r()
	}
	// The last release waits for the runner: nothing runs afterwards.
	for _, c := range []Codec{H264, VP8, Opus} {
		if n := fk.live[c].Load(); n != 0 {
			t.Errorf("%s: %d encoders after last release", c, n)
		}
		if st := stats(s, c); st.Running || st.Users != 0 {
			t.Errorf("%s after release: %+v", c, st)
		}
	}
	// And it starts again.
	r, err := s.Acquire(H264)
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "restart", func() bool { return stats(s, H264).Starts == 2 && stats(s, H264).Frames > 6 })
	r()
}

func TestStreamTwoVideoCodecs(t *testing.T) {
	fk := newFakes()
	s := newTestStream(t, fk)
	rh, _ := s.Acquire(H264)
	rv, _ := s.Acquire(VP8)
	waitFor(t, "both", func() bool { return stats(s, H264).Frames > 2 && stats(s, VP8).Frames > 2 })
	rh()
	waitFor(t, "H264 to stop", func() bool { return fk.live[H264].Load() == 0 })
	n := stats(s, VP8).Frames
	waitFor(t, "VP8 to go on", func() bool { return stats(s, VP8).Frames > n+2 })
	rv()
	if fk.live[VP8].Load() != 0 {
		t.Error("VP8 still running")
	}
}

func TestStreamKeyFrameRequestsAreRateLimited(t *testing.T) {
	fk := newFakes()
	s := newTestStream(t, fk)
	r, _ := s.Acquire(H264)
	defer r()
	waitFor(t, "start", func() bool { return stats(s, H264).Frames >= 10 })
	base := stats(s, H264)
	if base.KeyFrames != 1 || base.ForcedKeyFrames != 0 {
		t.Fatalf("start: %+v (the acquire's request is met by the first frame)", base)
	}
	// A burst of requests (PLIs from four viewers) is one keyframe.
	for i := 0; i < 4; i++ {
		s.RequestKeyFrame(H264)
	}
	waitFor(t, "keyframe", func() bool { return stats(s, H264).ForcedKeyFrames == 1 })
	// A request inside the gap is deferred, not dropped.
	s.RequestKeyFrame(H264)
	t0 := time.Now()
	waitFor(t, "deferred keyframe", func() bool { return stats(s, H264).ForcedKeyFrames == 2 })
	if el := time.Since(t0); el < 50*time.Millisecond {
		t.Errorf("second keyframe after %v, want the 100ms gap", el)
	}
	st := stats(s, H264)
	if st.KeyFrames != 3 || st.KeyFrameRequests != base.KeyFrameRequests+5 {
		t.Errorf("%+v", st)
	}
	if fk.forced.Load() != 2 {
		t.Errorf("encoder forced %d times", fk.forced.Load())
	}
}

func TestStreamClose(t *testing.T) {
	before := runtime.NumGoroutine()
	fk := newFakes()
	s, err := NewStream(StreamConfig{Width: 64, Height: 48, FPS: 50, Encoders: fk.encoders()})
	if err != nil {
		t.Fatal(err)
	}
	r, _ := s.Acquire(VP8)
	r2, _ := s.Acquire(Opus)
	waitFor(t, "frames", func() bool { return stats(s, VP8).Frames > 0 })
	s.Close()
	if _, err := s.Acquire(H264); !errors.Is(err, ErrClosed) {
		t.Errorf("acquire after close: %v", err)
	}
	r()
	r2()
	for c, n := range fk.live {
		if n.Load() != 0 {
			t.Errorf("%s: %d encoders after close", c, n.Load())
		}
	}
	waitFor(t, "goroutines", func() bool { return runtime.NumGoroutine() <= before })
}

func TestStreamSourceFailure(t *testing.T) {
	fk := newFakes()
	var opens atomic.Int64
	s, err := NewStream(StreamConfig{Width: 64, Height: 48, FPS: 50, Encoders: fk.encoders(),
		OpenVideo: func(VideoFormat) (VideoSource, error) {
			opens.Add(1)
			return nil, errors.New("no camera")
		}})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	r, _ := s.Acquire(H264)
	waitFor(t, "open attempt", func() bool { return opens.Load() == 1 })
	r()
	r, _ = s.Acquire(H264)
	waitFor(t, "retry", func() bool { return opens.Load() == 2 })
	r()
}

func TestPipelineConcurrentAcquireRelease(t *testing.T) {
	fk := newFakes()
	s := newTestStream(t, fk)
	var wg sync.WaitGroup
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := 0; j < 20; j++ {
				c := []Codec{H264, VP8, Opus}[(i+j)%3]
				r, err := s.Acquire(c)
				if err != nil {
					t.Error(err)
					return
				}
				s.RequestKeyFrame(c)
				r()
			}
		}()
	}
	wg.Wait()
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	for ctx.Err() == nil {
		if fk.live[H264].Load()+fk.live[VP8].Load()+fk.live[Opus].Load() == 0 {
			return
		}
		time.Sleep(time.Millisecond)
	}
	t.Error("encoders left running")
}

// TestUrgentKeyFrameDoesNotWaitForTheNextFrame: at 2 frames per second, a
// RequestKeyFrameNow is served by encoding the last picture again at once,
// not half a second later with the next frame, and the frame count moves
// by exactly that one extra frame.
func TestUrgentKeyFrameDoesNotWaitForTheNextFrame(t *testing.T) {
	// On synctest's clock: the next frame is due 450 ms after the request,
	// and a wall-clock bound between the two is what a loaded machine missed.
	synctest.Test(t, func(t *testing.T) {
		fk := newFakes()
		s, err := NewStream(StreamConfig{Width: 64, Height: 48, FPS: 2, Encoders: fk.encoders(), MinKeyFrameGap: time.Minute})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		r, _ := s.Acquire(H264)
		defer r()
		waitFor(t, "first frame", func() bool { return stats(s, H264).Frames >= 1 })
		time.Sleep(50 * time.Millisecond) // the loop is waiting for the next frame
		before := stats(s, H264)
		t0 := time.Now()
		s.RequestKeyFrameNow(H264)
		waitFor(t, "urgent keyframe", func() bool { return stats(s, H264).ForcedKeyFrames == before.ForcedKeyFrames+1 })
		if el := time.Since(t0); el > 50*time.Millisecond {
			t.Errorf("urgent keyframe after %v; the next frame was due within 450 ms", el)
		}
		if got := stats(s, H264); got.Frames != before.Frames+1 || got.KeyFrames != before.KeyFrames+1 {
			t.Errorf("after the urgent keyframe: %+v, before %+v", got, before)
		}
		// A plain request still waits for a frame (and for the gap).
		s.RequestKeyFrame(H264)
		time.Sleep(100 * time.Millisecond)
		if got := stats(s, H264).ForcedKeyFrames; got != before.ForcedKeyFrames+1 {
			t.Errorf("a rate-limited request was served at once: %d forced", got)
		}
	})
}

// An urgent request made before the encoder started (a viewer connected
// before the first frame) is met by the fresh encoder's keyframe: it must
// not exempt a later plain request from the rate limit.
func TestUrgentKeyFrameMetByTheFirstFrame(t *testing.T) {
	fk := newFakes()
	s, err := NewStream(StreamConfig{Width: 64, Height: 48, FPS: 50, Encoders: fk.encoders(), MinKeyFrameGap: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	r, _ := s.Acquire(H264)
	defer r()
	s.RequestKeyFrameNow(H264)
	waitFor(t, "first frames", func() bool { return stats(s, H264).Frames >= 3 })
	s.RequestKeyFrame(H264) // a PLI within the minute's gap
	time.Sleep(200 * time.Millisecond)
	if st := stats(s, H264); st.KeyFrames != 1 || st.ForcedKeyFrames != 0 {
		t.Errorf("after the first frame and a rate-limited request: %+v, want only the first keyframe", st)
	}
}

// Warm starts the source and the encoder and pays the encoder's first
// frame, sending nothing; the first frame written once someone acquires
// the codec is a keyframe from the same encoder, and the warm holder
// keeps it running until it lets go too.
func TestStreamWarm(t *testing.T) {
	fk := newFakes()
	s, err := NewStream(StreamConfig{Width: 64, Height: 48, FPS: 50, Encoders: fk.encoders(), MinKeyFrameGap: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	if _, err := s.Warm(Opus); err == nil {
		t.Error("Warm(Opus) succeeded")
	}
	var firstKey atomic.Int32 // 0: nothing written yet, 1: key, 2: delta
	cancel, err := s.Tap(H264, func(smp pionmedia.Sample) {
		k := int32(2)
		if IsKeyFrame(H264, smp.Data) {
			k = 1
		}
		firstKey.CompareAndSwap(0, k)
	})
	if err != nil {
		t.Fatal(err)
	}
	defer cancel()

	warm, err := s.Warm(H264)
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "warm encoder", func() bool { return fk.encodes[H264].Load() == 1 })
	time.Sleep(100 * time.Millisecond) // five frames at 50 fps
	if st := stats(s, H264); st.Frames != 0 || !st.Running || st.Starts != 1 || fk.encodes[H264].Load() != 1 || firstKey.Load() != 0 {
		t.Errorf("warm: %+v, %d encodes; want one encode and nothing written", st, fk.encodes[H264].Load())
	}

	release, err := s.Acquire(H264)
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "frames", func() bool { return stats(s, H264).Frames >= 3 })
	if firstKey.Load() != 1 {
		t.Error("the first frame written after the warm-up is not a keyframe")
	}
	if st := stats(s, H264); st.Starts != 1 || st.KeyFrames != 1 || fk.live[H264].Load() != 1 {
		t.Errorf("after acquire: %+v, %d live encoders; want the warm one, one keyframe", st, fk.live[H264].Load())
	}
	// An urgent request is served from the latest picture at once.
	s.RequestKeyFrameNow(H264)
	waitFor(t, "urgent keyframe", func() bool { return stats(s, H264).KeyFrames == 2 })

	release()
	time.Sleep(50 * time.Millisecond)
	if !stats(s, H264).Running {
		t.Error("the encoder stopped while warm")
	}
	warm()
	warm() // idempotent
	waitFor(t, "encoder stopped", func() bool { return fk.live[H264].Load() == 0 })
}

// slowVideo is a fakeVideo whose encode takes a while and says when it
// starts, so a test can act while the loop is in the middle of a frame.
type slowVideo struct {
	VideoEncoder
	started chan struct{}
}

func (v slowVideo) Encode(img *image.YCbCr, key bool) ([]byte, error) {
	select {
	case v.started <- struct{}{}:
	default:
	}
	time.Sleep(30 * time.Millisecond)
	return v.VideoEncoder.Encode(img, key)
}

// TestVideoLoopStopsWhileAFrameIsHandled: releasing the last user while
// the loop is still encoding a frame must not leave the loop waiting for
// the reader, which stopped on the same context (a hang found by
// BenchmarkEndToEnd: the next call got no video).
func TestVideoLoopStopsWhileAFrameIsHandled(t *testing.T) {
	fk := newFakes()
	enc := fk.encoders()
	started := make(chan struct{}, 1)
	h264 := enc.H264
	enc.H264 = func(cfg VideoEncoderConfig) (VideoEncoder, error) {
		e, err := h264(cfg)
		return slowVideo{VideoEncoder: e, started: started}, err
	}
	s, err := NewStream(StreamConfig{Width: 64, Height: 48, FPS: 100, Encoders: enc})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if !t.Failed() { // after a hang Close would hang too
			s.Close()
		}
	})
	for i := range 5 {
		r, _ := s.Acquire(H264)
		select {
		case <-started:
		case <-time.After(5 * time.Second):
			t.Fatalf("round %d: no frame", i)
		}
		done := make(chan struct{})
		go func() { r(); close(done) }() // while that frame is encoded
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			t.Fatalf("round %d: release hangs", i)
		}
	}
}

// TestStreamTap: a tap sees every sample the shared track gets, from the
// one encoder, and nothing once cancelled.
func TestStreamTap(t *testing.T) {
	fk := newFakes()
	s := newTestStream(t, fk)
	var mu sync.Mutex
	got := map[Codec]int{}
	var cancels []func()
	for _, c := range []Codec{H264, Opus} {
		cancel, err := s.Tap(c, func(smp pionmedia.Sample) {
			mu.Lock()
			defer mu.Unlock()
			if len(smp.Data) > 0 {
				got[c]++
			}
		})
		if err != nil {
			t.Fatal(err)
		}
		cancels = append(cancels, cancel)
		release, err := s.Acquire(c)
		if err != nil {
			t.Fatal(err)
		}
		defer release()
	}
	if _, err := s.Tap("video/AV1", func(pionmedia.Sample) {}); err == nil {
		t.Error("tap of a codec without an encoder")
	}
	count := func(c Codec) int { mu.Lock(); defer mu.Unlock(); return got[c] }
	waitFor(t, "tapped frames", func() bool { return count(H264) >= 5 && count(Opus) >= 3 })
	for _, c := range []Codec{H264, Opus} {
		if n := fk.live[c].Load(); n != 1 {
			t.Errorf("%s: %d encoders, want 1", c, n)
		}
	}
	for _, cancel := range cancels {
		cancel()
		cancel()
	}
	before := count(H264)
	frames := stats(s, H264).Frames
	waitFor(t, "frames after cancel", func() bool { return stats(s, H264).Frames >= frames+3 })
	if after := count(H264); after > before+1 { // one may have been in flight
		t.Errorf("tap got %d samples after cancel", after-before)
	}
}

// TestStreamInputLevel: while Opus runs, the stream reports the level of
// the audio it encodes (the default tone: -12 dBFS peak, -15 dBFS RMS).
func TestStreamInputLevel(t *testing.T) {
	s := newTestStream(t, newFakes())
	if _, ok := s.InputLevel(); ok {
		t.Fatal("a level before the encoder ran")
	}
	release, err := s.Acquire(Opus)
	if err != nil {
		t.Fatal(err)
	}
	defer release()
	deadline := time.Now().Add(5 * time.Second)
	for {
		if l, ok := s.InputLevel(); ok {
			if math.Abs(l.PeakDBFS-(-12)) > 0.5 || math.Abs(l.RMSDBFS-(-15)) > 0.5 || time.Since(l.At) > time.Second {
				t.Fatalf("level %+v, want -12 dBFS peak, -15 dBFS RMS, recent", l)
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("no level while Opus runs")
		}
		time.Sleep(10 * time.Millisecond)
	}
}
