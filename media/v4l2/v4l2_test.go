package v4l2

import (
	"bytes"
	"context"
	"image"
	"testing"
	"time"

	"github.com/doorbell/intercom/media"
)

func TestNegotiate(t *testing.T) {
	all := map[PixFmt]string{H264: "H.264", MJPEG: "Motion-JPEG", YUYV: "YUYV 4:2:2"}
	raw := map[PixFmt]string{YUYV: "YUYV 4:2:2"}
	oldJPEG := map[PixFmt]string{JPEG: "JFIF JPEG", YUYV: "YUYV"}
	for _, tc := range []struct {
		name    string
		offered map[PixFmt]string
		want    string
		h264    bool
		got     PixFmt
		fail    bool
	}{
		{"auto prefers H.264 passthrough", all, "auto", true, H264, false},
		{"auto without passthrough takes MJPEG", all, "auto", false, MJPEG, false},
		{"auto falls back to YUYV", raw, "auto", true, YUYV, false},
		{"JPEG is MJPEG", oldJPEG, "mjpeg", false, JPEG, false},
		{"forced yuyv", all, "yuyv", true, YUYV, false},
		{"forced h264 not offered", raw, "h264", true, 0, true},
		{"nothing usable", map[PixFmt]string{fourcc("RGB3"): "RGB"}, "auto", true, 0, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Negotiate(tc.offered, tc.want, tc.h264)
			if tc.fail {
				if err == nil {
					t.Fatalf("negotiated %v", got)
				}
				return
			}
			if err != nil || got != tc.got {
				t.Fatalf("got %v, %v; want %v", got, err, tc.got)
			}
		})
	}
	if !PassesThrough(all, "auto") || PassesThrough(all, "mjpeg") || PassesThrough(raw, "auto") {
		t.Error("PassesThrough")
	}
}

func i420(w, h int) *image.YCbCr {
	return image.NewYCbCr(image.Rect(0, 0, w, h), image.YCbCrSubsampleRatio420)
}

func TestYUYVToI420(t *testing.T) {
	// 4x2: luma ramps, chroma differs between the two rows (averaged).
	src := []byte{
		10, 100, 20, 200, 30, 110, 40, 210,
		50, 102, 60, 202, 70, 112, 80, 212,
	}
	dst := i420(4, 2)
	if err := (yuyvConverter{w: 4, h: 2}).convert(src, dst); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(dst.Y, []byte{10, 20, 30, 40, 50, 60, 70, 80}) {
		t.Errorf("Y = %v", dst.Y)
	}
	if !bytes.Equal(dst.Cb, []byte{101, 111}) || !bytes.Equal(dst.Cr, []byte{201, 211}) {
		t.Errorf("Cb = %v, Cr = %v", dst.Cb, dst.Cr)
	}
	if err := (yuyvConverter{w: 4, h: 2}).convert(src[:10], dst); err == nil {
		t.Error("short frame accepted")
	}
	// A driver that delivers another size is scaled into the stream's.
	big := i420(8, 4)
	if err := (yuyvConverter{w: 4, h: 2}).convert(src, big); err != nil {
		t.Fatal(err)
	}
	if big.Y[0] != 10 || big.Y[7] != 40 || big.Y[3*8] != 50 {
		t.Errorf("scaled Y = %v", big.Y)
	}
}

func TestMJPEGToI420(t *testing.T) {
	for _, drop := range []bool{false, true} {
		dst := i420(64, 48)
		c := &mjpegConverter{}
		if err := c.convert(jpegFrame(64, 48, 150, drop), dst); err != nil {
			t.Fatalf("dropDHT=%v: %v", drop, err)
		}
		near := func(got, want byte) bool { return got+3 >= want && got <= want+3 }
		if !near(dst.Y[100], 150) || !near(dst.Cb[10], 90) || !near(dst.Cr[10], 240) {
			t.Errorf("dropDHT=%v: Y %d Cb %d Cr %d", drop, dst.Y[100], dst.Cb[10], dst.Cr[10])
		}
	}
}

var (
	sps   = []byte{0x67, 0x42, 0xe0, 0x1f}
	pps   = []byte{0x68, 0xce, 0x3c, 0x80}
	idr   = []byte{0x65, 0x88, 0x84}
	slice = []byte{0x41, 0x9a, 0x02}
	aud   = []byte{0x09, 0xf0}
)

func annexB(nals ...[]byte) []byte {
	var b []byte
	for _, n := range nals {
		b = append(append(b, 0, 0, 0, 1), n...)
	}
	return b
}

func TestH264FramerRepeatsParameterSets(t *testing.T) {
	var f h264Framer
	if out, incomplete := f.frame(annexB(idr)); out != nil || !incomplete {
		t.Fatal("an IDR without any SPS/PPS seen was passed on")
	}
	first := annexB(aud, sps, pps, idr)
	if out, _ := f.frame(first); !bytes.Equal(out, first) {
		t.Fatalf("complete keyframe changed: %x", out)
	}
	p := annexB(aud, slice)
	if out, _ := f.frame(p); !bytes.Equal(out, p) {
		t.Fatalf("inter frame changed: %x", out)
	}
	// Three-byte start codes, as some encoders write them.
	later := append([]byte{0, 0, 1}, append(aud, append([]byte{0, 0, 1}, idr...)...)...)
	out, _ := f.frame(later)
	if want := annexB(aud, sps, pps, idr); !bytes.Equal(out, want) {
		t.Fatalf("keyframe without parameter sets:\n got %x\nwant %x", out, want)
	}
	if !media.IsKeyFrame(media.H264, out) {
		t.Fatal("not a keyframe")
	}
	// A new SPS replaces the old one.
	sps2 := []byte{0x67, 0x42, 0xe0, 0x28}
	f.frame(annexB(sps2, pps, idr))
	out, _ = f.frame(annexB(idr))
	if want := annexB(sps2, pps, idr); !bytes.Equal(out, want) {
		t.Fatalf("stale SPS: %x", out)
	}
}

func readN(t *testing.T, src media.VideoSource, n int) []*media.Frame {
	t.Helper()
	var out []*media.Frame
	for range n {
		f, err := src.ReadFrame(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		cp := *f
		out = append(out, &cp)
	}
	return out
}

var testFormat = media.VideoFormat{Width: 64, Height: 48, FPS: 50}

func newTestCamera(w *fakeWorld, format string, passthrough bool) *Camera {
	return NewCamera(Config{Device: "/dev/video9", Format: format, PassThrough: passthrough, Open: w.open,
		MinBackoff: 20 * time.Millisecond, MaxBackoff: 80 * time.Millisecond})
}

// isPlaceholder tells the "camera unavailable" picture (dark grey) from
// the fake camera's (luma 150).
func isPlaceholder(f *media.Frame) bool { return f.Image != nil && f.Image.Y[len(f.Image.Y)-1] == 40 }

func TestCameraVanishesAndReturns(t *testing.T) {
	w := &fakeWorld{formats: map[PixFmt]string{YUYV: "YUYV", MJPEG: "MJPG"}, frameY: 150}
	cam := newTestCamera(w, "auto", false)
	src, err := cam.OpenVideo(testFormat)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	for _, f := range readN(t, src, 3) {
		if f.Image == nil || f.Image.Y[0] < 147 || f.Image.Y[0] > 153 {
			t.Fatal("camera picture not delivered")
		}
	}
	if st := cam.Status(); !st.Available || st.Format != "MJPG" || st.Frames != 3 {
		t.Fatalf("status %+v", st)
	}

	w.setGone(true) // unplugged
	start := time.Now()
	for _, f := range readN(t, src, 10) {
		if !isPlaceholder(f) {
			t.Fatal("no 'camera unavailable' picture while the camera is gone")
		}
	}
	if took := time.Since(start); took < 10*testFormat.Interval()*8/10 {
		t.Fatalf("placeholder not paced: 10 frames in %v", took)
	}
	st := cam.Status()
	if st.Available || st.Error == "" {
		t.Fatalf("status while gone: %+v", st)
	}
	opens := w.opens

	w.setGone(false) // plugged back in
	deadline := time.Now().Add(2 * time.Second)
	for {
		f := readN(t, src, 1)[0]
		if !isPlaceholder(f) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("camera not reopened")
		}
	}
	if st := cam.Status(); !st.Available || st.Reopens != 1 || w.opens != opens+1 {
		t.Fatalf("after return: %+v, opens %d→%d", st, opens, w.opens)
	}
	if !w.devs[0].closed {
		t.Fatal("the lost device was not closed")
	}
}

func TestCameraAbsentAtStartBacksOff(t *testing.T) {
	w := &fakeWorld{formats: map[PixFmt]string{YUYV: "YUYV"}, gone: true}
	cam := newTestCamera(w, "auto", false)
	src, err := cam.OpenVideo(testFormat)
	if err != nil {
		t.Fatal("a missing camera must not stop the stream:", err)
	}
	defer src.Close()
	readN(t, src, 25) // 0.5 s: backoff 20, 40, 80, 80… ms
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.opens != 0 {
		t.Fatalf("%d opens succeeded while gone", w.opens)
	}
	if st := cam.Status(); st.Available || st.Error == "" {
		t.Fatalf("status %+v", st)
	}
}

func TestCameraPassesH264Through(t *testing.T) {
	w := &fakeWorld{formats: map[PixFmt]string{H264: "H.264", MJPEG: "MJPG"}}
	// The camera sends SPS/PPS with its first IDR only.
	w.au = func(n int) []byte {
		switch {
		case n == 1:
			return annexB(sps, pps, idr)
		case n%5 == 0:
			return annexB(idr)
		}
		return annexB(slice)
	}
	cam := newTestCamera(w, "auto", true)
	src, err := cam.OpenVideo(testFormat)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	frames := readN(t, src, 11)
	for i, f := range frames {
		if f.Image != nil || f.H264 == nil {
			t.Fatalf("frame %d not passed through", i)
		}
		n := i + 1
		if n%5 == 0 && !bytes.Equal(f.H264, annexB(sps, pps, idr)) {
			t.Fatalf("keyframe %d lacks SPS/PPS: %x", n, f.H264)
		}
		if n%5 != 0 && n != 1 && !bytes.Equal(f.H264, annexB(slice)) {
			t.Fatalf("inter frame %d changed: %x", n, f.H264)
		}
	}
	if w.devs[0].keyForce == 0 {
		t.Fatal("no keyframe asked at start")
	}
	cam.RequestKeyFrame()
	before := w.devs[0].keyForce
	readN(t, src, 1)
	if w.devs[0].keyForce != before+1 {
		t.Fatal("RequestKeyFrame did not reach the camera")
	}
}

// TestCameraInStream runs the camera inside a media.Stream with the real
// snapshot path: a snapshot works while the camera is there, and the
// stream keeps going (placeholder) when it is gone.
func TestCameraInStream(t *testing.T) {
	w := &fakeWorld{formats: map[PixFmt]string{YUYV: "YUYV"}, frameY: 150}
	cam := newTestCamera(w, "auto", false)
	s, err := media.NewStream(media.StreamConfig{Width: 64, Height: 48, FPS: 50, OpenVideo: cam.OpenVideo,
		Encoders: media.Encoders{Opus: func(media.AudioEncoderConfig) (media.AudioEncoder, error) { return nil, nil }}})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	b, err := s.Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(b) < 100 || b[0] != 0xff || b[1] != 0xd8 {
		t.Fatal("not a JPEG")
	}
	w.setGone(true)
	if _, err := s.Snapshot(ctx); err != nil {
		t.Fatal("no snapshot (of the placeholder) while the camera is gone:", err)
	}
}
