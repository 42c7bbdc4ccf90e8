package e2e

import (
	"context"
	"net/http"
	"testing"
	"time"

	"github.com/doorbell/intercom/internal/testenv/dendrite"
	"github.com/doorbell/intercom/internal/testenv/householdpeer"
	"github.com/doorbell/intercom/internal/testenv/resident"
)

// TestHouseholdAnswerStopsEveryPath: one press rings three ways at once —
// alice and bob (matrix-js-sdk) get a classic call and a MatrixRTC ring in
// their direct rooms, and zoe's famedly-style wall tablet is rung in the
// household group call. The tablet answers first (it connects as soon as
// the intercom calls it), so every other ring of that press must stop:
// both classic calls get an m.call.hangup and both MatrixRTC rings are
// withdrawn (the intercom clears its call membership), each within one
// second of the tablet's first frame. "First answer wins" is one rule,
// whichever path answers.
func TestHouseholdAnswerStopsEveryPath(t *testing.T) {
	var home string
	var zoe dendrite.User
	s := startRTCSystemFor(t, false, func(hs *dendrite.Server) string {
		ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
		defer cancel()
		var err error
		if zoe, err = hs.Register(ctx, "zoe", "zoe-password"); err != nil {
			t.Fatal(err)
		}
		// The intercom's account exists by now (newE2E registers it).
		var created struct {
			RoomID string `json:"room_id"`
		}
		if err := matrixDo(ctx, hs, zoe.AccessToken, http.MethodPost, "/_matrix/client/v3/createRoom", map[string]any{
			"preset": "private_chat", "name": "Home", "invite": []string{"@intercom:" + hs.ServerName},
			"power_level_content_override": map[string]any{"events": map[string]int{
				"com.famedly.call.member": 0, "org.matrix.msc3401.call.member": 0, "org.matrix.msc4075.rtc.notification": 0}},
		}, &created); err != nil {
			t.Fatal(err)
		}
		home = created.RoomID
		return "household:\n  room: \"" + home + "\"\n  group_call: mesh\n"
	})
	alice, bob := s.residents[0], s.residents[1]
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()
	s.householdStatus(ctx, "household room joined", func(st householdStatus) bool { return st.Matrix.Household.Room == home })
	tablet, err := householdpeer.Start(ctx, householdpeer.Options{Homeserver: s.hs.BaseURL, UserID: zoe.UserID,
		AccessToken: zoe.AccessToken, DeviceID: zoe.DeviceID, Room: home, Logf: func(f string, a ...any) { t.Logf("zoe: "+f, a...) }})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(tablet.Close)
	s.householdStatus(ctx, "zoe's membership read", func(st householdStatus) bool { return len(st.Matrix.Household.Members) == 1 })

	pressed := s.press()
	for _, r := range []*resident.Resident{alice, bob} {
		waitEvent(ctx, t, r, resident.EventIncoming, pressed, func(resident.Event) bool { return true })
		room := roomOf(t, r)
		waitEvent(ctx, t, r, resident.EventRTCRing, pressed, func(ev resident.Event) bool { return ev.Str("roomId") == room })
	}
	for tablet.Frames() == 0 {
		select {
		case <-ctx.Done():
			t.Fatal("zoe's tablet never received a frame")
		case <-time.After(10 * time.Millisecond):
		}
	}
	answered := time.Now()
	t.Logf("press → tablet's first frame %v", answered.Sub(pressed))

	// Each resident's classic call ends and their MatrixRTC ring is
	// withdrawn, within a second of the tablet's answer.
	wctx, wcancel := context.WithTimeout(ctx, 10*time.Second)
	defer wcancel()
	for _, r := range []*resident.Resident{alice, bob} {
		hung := waitEvent(wctx, t, r, resident.EventHangup, pressed, func(resident.Event) bool { return true })
		room := roomOf(t, r)
		left := waitEvent(wctx, t, r, resident.EventRTCMembership, pressed, func(ev resident.Event) bool {
			c, _ := ev.Fields["content"].(map[string]any)
			return ev.Str("roomId") == room && ev.Str("sender") == s.bot.UserID && len(c) == 0
		})
		t.Logf("%s: classic hangup %v, MatrixRTC ring withdrawn %v after the tablet answered",
			r.UserID(), hung.TS.Sub(answered), left.TS.Sub(answered))
		if d := hung.TS.Sub(answered); d > time.Second {
			t.Errorf("%s: classic call hung up %v after the tablet answered, want ≤ 1 s", r.UserID(), d)
		}
		if d := left.TS.Sub(answered); d > time.Second {
			t.Errorf("%s: MatrixRTC ring withdrawn %v after the tablet answered, want ≤ 1 s", r.UserID(), d)
		}
	}
	st := s.waitStatus(ctx, "in the household call, ringer off", func(st status) bool {
		return st.State == "in_call" && !st.Ringer.Ringing
	})
	t.Logf("status after the tablet answered: %+v", st.Calls)
}
