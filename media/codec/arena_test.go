package codec

import (
	"image"
	"os"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/doorbell/intercom/media"
)

// rssAnon is this process's anonymous resident memory (RssAnon), in bytes.
func rssAnon(t *testing.T) int64 {
	t.Helper()
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Skipf("no procfs: %v", err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "RssAnon:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			return kb << 10
		}
	}
	t.Skip("no RssAnon in /proc/self/status")
	return 0
}

// Encoders made and closed call after call, each on a thread of its own
// as cgo calls land, give their memory back once idle (trimHeap): with
// glibc's default arenas ten VP8 encoders kept ≈ 23 MB resident.
func TestEncodersGiveMemoryBack(t *testing.T) {
	img := image.NewYCbCr(image.Rect(0, 0, 640, 480), image.YCbCrSubsampleRatio420)
	trimHeap()
	before := rssAnon(t)
	for i := range 12 {
		done := make(chan error)
		go func() {
			// A thread of its own, kept for the encoder's life, as
			// concurrent calls would land on different threads.
			runtime.LockOSThread()
			defer runtime.UnlockOSThread()
			e, err := NewVP8(media.VideoEncoderConfig{VideoFormat: media.VideoFormat{Width: 640, Height: 480, FPS: 15}, Bitrate: 600_000, KeyFrameInterval: 2 * time.Second})
			if err != nil {
				done <- err
				return
			}
			for range 3 {
				if _, err := e.Encode(img, false); err != nil {
					done <- err
					return
				}
			}
			done <- e.Close()
		}()
		if err := <-done; err != nil {
			t.Fatalf("encoder %d: %v", i, err)
		}
		trimHeap()
	}
	grew := rssAnon(t) - before
	t.Logf("anonymous memory after 12 encoders made and closed: %+d kB", grew>>10)
	if grew > 8<<20 {
		t.Errorf("anonymous memory grew %d kB over 12 encoders made and closed, want it given back", grew>>10)
	}
}
