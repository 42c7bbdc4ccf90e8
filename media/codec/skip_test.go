package codec

import (
	"testing"
	"time"

	"github.com/doorbell/intercom/media"
)

// TestH264KeepsEveryFrame: at the stream's lowest target (150 kb/s) and a
// camera-like picture (media.NoisyTestPattern: the test pattern with
// sensor-like noise), the H.264 encoder writes every frame and
// still lands near its target. With OpenH264's frame skipping on it left
// out runs of up to five frames after keyframes and large P-frames,
// which a receiver counts as freezes (issue 16).
func TestH264KeepsEveryFrame(t *testing.T) {
	const bitrate = 150_000
	cfg := vga
	cfg.Bitrate = bitrate
	pat, err := media.NewNoisyTestPattern(cfg.VideoFormat)
	if err != nil {
		t.Fatal(err)
	}
	enc, err := NewH264(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer enc.Close()
	start := time.Now()
	const frames, settled = 30 * 15, 10 * 15 // 30 s; the rate counts after 10 s
	var bytes, keys int
	for i := range frames {
		img := pat.Render(start.Add(time.Duration(i) * cfg.Interval())).Image
		data, err := enc.Encode(img, i%45 == 20) // a PLI every 3 s besides the periodic keyframes
		if err != nil {
			t.Fatalf("frame %d: %v", i, err)
		}
		if len(data) == 0 {
			t.Fatalf("frame %d skipped", i)
		}
		if media.IsKeyFrame(media.H264, data) {
			keys++
		}
		if i >= settled {
			bytes += len(data)
		}
	}
	rate := float64(bytes) * 8 / (float64(frames-settled) / float64(cfg.FPS))
	t.Logf("%d keyframes; %.0f kb/s over the last 20 s for a %d kb/s target", keys, rate/1000, bitrate/1000)
	// Without frame skipping OpenH264 overshoots at this target (17–21 %
	// here, with a forced keyframe every 3 s besides the periodic ones).
	if rate < 0.8*bitrate || rate > 1.3*bitrate {
		t.Errorf("rate %.0f b/s, want 0.8–1.3 times %d", rate, bitrate)
	}
}
