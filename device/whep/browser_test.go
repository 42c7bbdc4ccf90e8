package whep_test

import (
	"context"
	"io"
	"net/http"
	"os"
	"testing"
	"time"

	"github.com/doorbell/intercom/internal/testenv/webpage"
	"github.com/doorbell/intercom/media"
)

// TestWHEPInChromium: a WHEP client that is not ours — Chromium's
// RTCPeerConnection driven by a page that follows the WHEP draft by hand
// (testdata/viewer.html) — decodes the door's video and gets its audio,
// and its DELETE ends the session. Needs node and Chromium; run it under
// the shared lock (flock /tmp/e2e.lock).
func TestWHEPInChromium(t *testing.T) {
	if testing.Short() {
		t.Skip("needs node and Chromium")
	}
	d := newDoorWith(t, 3, map[string]http.Handler{
		"GET /{$}": http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			http.ServeFile(w, r, "testdata/viewer.html")
		}),
	})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	page, err := webpage.Start(ctx, webpage.Options{URL: d.url + "/", Log: testLog(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { page.Close() })
	var loc string
	if err := page.Eval(ctx, "return await watch()", &loc); err != nil {
		t.Fatal(err)
	}
	first, err := page.WaitFor(ctx, "firstFrame")
	if err != nil {
		t.Fatal(err)
	}
	if w, h := first.Num("width"), first.Num("height"); w != 640 || h != 480 {
		t.Errorf("first frame %vx%v, want the door's 640x480", w, h)
	}
	if _, err := page.WaitFor(ctx, "frames"); err != nil {
		t.Fatal(err)
	}
	var st struct {
		FramesDecoded int    `json:"framesDecoded"`
		AudioPackets  int    `json:"audioPackets"`
		Codec         string `json:"codec"`
	}
	deadline := time.Now().Add(10 * time.Second)
	for st.AudioPackets == 0 && time.Now().Before(deadline) {
		if err := page.Eval(ctx, "return await stats()", &st); err != nil {
			t.Fatal(err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if st.FramesDecoded < 30 || st.AudioPackets == 0 || st.Codec != "video/H264" {
		t.Errorf("Chromium's stats %+v, want 30+ H.264 frames decoded and audio", st)
	}
	t.Logf("Chromium: POST → first frame %.0f ms; %+v", first.Num("ms"), st)
	if d.srv.Status().Viewers != 1 {
		t.Errorf("status %+v, want one viewer", d.srv.Status())
	}
	// Viewers negotiate no transport-cc (media/webrtc/viewerbudget.go):
	// Chromium's estimate reaches the encoder all the same, with no call
	// on (its REMB, and the loss-based estimate on its receiver reports).
	waitFor(t, "Chromium's estimate at the encoder", 5*time.Second, func() bool {
		return stats(d.stream, media.H264).EstimateReceivers == 1
	})
	var code int
	if err := page.Eval(ctx, "return await stop()", &code); err != nil || code != http.StatusOK {
		t.Fatalf("DELETE %s from the page: %d %v", loc, code, err)
	}
	waitFor(t, "the encoders to stop", 5*time.Second, func() bool {
		return d.srv.Status().Viewers == 0 && !stats(d.stream, media.H264).Running
	})
}

// testLog is where the browser's diagnostics go: the test's output with
// -v, else nowhere.
func testLog(t *testing.T) io.Writer {
	if testing.Verbose() {
		return os.Stderr
	}
	return io.Discard
}
