package daemon

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/doorbell/intercom/device/whep"
	"github.com/doorbell/intercom/internal/testenv/go2rtc"
)

// TestGo2RTCWatchesTheDoor: go2rtc (built from the module proxy) takes the
// door's camera from the WHEP endpoint as its documentation's users would
// configure it — a `webrtc:` source whose URL carries the token as its
// password — and hands out a picture of it (GET /api/frame.mp4, an MP4 of
// one H.264 keyframe, no ffmpeg needed).
func TestGo2RTCWatchesTheDoor(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs go2rtc")
	}
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	hs := newHS(t)
	path, token := writeTokenConfig(t, hs, "")
	r := startDaemon(t, hs, path)
	var log io.Writer = io.Discard
	if testing.Verbose() {
		log = &prefixWriter{t: t}
	}
	g := go2rtc.Start(t, ctx, map[string]string{"door": "webrtc:http://go2rtc:" + token + "@" + r.api + whep.Path}, log)

	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, g.URL+"/api/frame.mp4?src=door", nil)
	client := &http.Client{Timeout: 30 * time.Second}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || len(body) < 1000 || !bytes.Contains(body[:min(len(body), 64)], []byte("ftyp")) {
		t.Fatalf("go2rtc's frame.mp4: %s, %d bytes: %.64q", resp.Status, len(body), body)
	}
	var st struct {
		Media struct {
			WHEP whep.Status `json:"whep"`
		} `json:"media"`
	}
	r.waitHTTP("go2rtc's session", "/api/status", func(code int, b []byte) bool {
		return code == http.StatusOK && json.Unmarshal(b, &st) == nil && st.Media.WHEP.Sessions >= 1
	})
	t.Logf("go2rtc: %d bytes of MP4 from the door; whep %+v", len(body), st.Media.WHEP)
}

// prefixWriter copies a child's output into the test's log.
type prefixWriter struct{ t *testing.T }

func (w *prefixWriter) Write(p []byte) (int, error) {
	w.t.Logf("go2rtc: %s", bytes.TrimRight(p, "\n"))
	return len(p), nil
}
