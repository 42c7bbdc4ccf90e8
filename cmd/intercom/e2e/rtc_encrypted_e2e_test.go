package e2e

import (
	"context"
	"io"
	"net/http"
	"regexp"
	"testing"
	"time"

	"github.com/doorbell/intercom/internal/testenv/resident"
)

// statusJSON is /api/status as it is.
func statusJSON(t testing.TB, api string) string {
	t.Helper()
	resp, err := http.Get("http://" + api + "/api/status")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestMatrixRTCEncryptedE2E: in encrypted direct rooms (the default of
// every current client) a press rings alice through MatrixRTC and bob
// with a classic call. alice answers as Element Call does in an encrypted
// room: per-participant media keys over Olm to-device messages
// (matrix-js-sdk's MatrixRTCSession) and LiveKit frame encryption
// (livekit-client's worker). She decodes the door's video and audio,
// which proves the door's frames are encrypted as livekit-client
// expects, and the intercom hears her, which proves it decrypts hers.
func TestMatrixRTCEncryptedE2E(t *testing.T) {
	s := startRTCSystemOpts(t, rtcOptions{Encrypted: true})
	alice, bob := s.residents[0], s.residents[1]
	room := roomOf(t, alice)
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()

	pressed := s.press()
	ring := waitEvent(ctx, t, alice, resident.EventRTCRing, pressed, func(ev resident.Event) bool { return ev.Str("roomId") == room })
	t.Logf("press → MatrixRTC ring at alice (encrypted room): %v", ring.TS.Sub(pressed))
	if _, err := bob.WaitFor(ctx, resident.EventIncoming); err != nil {
		t.Fatal(err)
	}
	st := s.waitStatus(ctx, "ringing", func(st status) bool { return st.State == "ringing" })
	t.Logf("ringing: %+v", st.Calls)

	joined, err := alice.RTCJoin(ctx, room, "")
	if err != nil {
		t.Fatal(err)
	}
	if joined.Fields["encrypted"] != true {
		t.Fatalf("alice joined without encryption: %v", joined.Fields)
	}
	// The intercom's key reaches her over Olm.
	key := waitEvent(ctx, t, alice, "rtcMediaKey", pressed, func(ev resident.Event) bool { return ev.Str("sender") == s.bot.UserID })
	t.Logf("press → the intercom's media key at alice: %v", key.TS.Sub(pressed))
	ff := waitEvent(ctx, t, alice, resident.EventRTCFirstFrame, pressed, func(resident.Event) bool { return true })
	t.Logf("alice joins → first decoded frame: %.0f ms (%vx%v)", ff.Num("ms"), ff.Fields["width"], ff.Fields["height"])
	if _, err := bob.WaitFor(ctx, resident.EventHangup); err != nil {
		t.Fatalf("bob's classic call still rings after alice answered: %v", err)
	}

	rs := s.waitMediaBothWays(t, alice)
	t.Logf("alice decodes %d frames %dx%d %s, audio energy %.3g; the intercom hears her", rs.FramesDecoded, rs.FrameWidth, rs.FrameHeight, rs.VideoCodec, rs.TotalAudioEnergy)
	for _, ev := range alice.Events() {
		if ev.Name == "rtcEncryptionError" {
			t.Logf("alice: frame encryption error (before the keys arrived?): %v", ev.Fields)
		}
	}
	if raw := statusJSON(t, s.api); !regexp.MustCompile(`"encrypted":\s*true`).MatchString(raw) {
		t.Errorf("status does not show the MatrixRTC call encrypted: %s", raw)
	}

	left := time.Now()
	if err := alice.RTCLeave(ctx, room); err != nil {
		t.Fatal(err)
	}
	s.waitStatus(ctx, "idle after alice left", func(st status) bool { return st.State == "idle" })
	s.waitLeft(ctx, t, alice, room, left)
}
