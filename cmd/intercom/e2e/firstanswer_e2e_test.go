package e2e

import (
	"context"
	"encoding/json"
	"net/http"
	"slices"
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
	// The classic invites leave at the press. The MatrixRTC rings follow
	// each room's membership and may not have left yet when the tablet
	// answers (it connects as soon as it is called): then they never do.
	for _, r := range []*resident.Resident{alice, bob} {
		waitEvent(ctx, t, r, resident.EventIncoming, pressed, func(resident.Event) bool { return true })
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

	// Each resident's classic call ends, and the MatrixRTC call the
	// intercom joined in their room is left (its membership cleared),
	// within a second of the tablet's answer; once the intercom has left
	// every MatrixRTC call, no ring reaches anyone any more.
	wctx, wcancel := context.WithTimeout(ctx, 10*time.Second)
	defer wcancel()
	s.waitStatus(wctx, "every MatrixRTC call left", func(st status) bool {
		var m struct {
			RTC struct {
				State string `json:"state"`
			} `json:"matrixrtc"`
		}
		_ = json.Unmarshal(st.Matrix, &m)
		return m.RTC.State == "idle"
	})
	for _, r := range []*resident.Resident{alice, bob} {
		hung := waitEvent(wctx, t, r, resident.EventHangup, pressed, func(resident.Event) bool { return true })
		if d := hung.TS.Sub(answered); d > time.Second {
			t.Errorf("%s: classic call hung up %v after the tablet answered, want ≤ 1 s", r.UserID(), d)
		}
		room := roomOf(t, r)
		ours := func(ev resident.Event) bool { return ev.Str("roomId") == room && ev.Str("sender") == s.bot.UserID }
		// Whatever the intercom sent to this room is on its way: give
		// the resident's sync a moment to show a membership, if any.
		mctx, mcancel := context.WithTimeout(wctx, 2*time.Second)
		_, joined := findEvent(mctx, r, resident.EventRTCMembership, pressed, ours)
		mcancel()
		if !joined {
			t.Logf("%s: classic hangup %v after the tablet answered; the MatrixRTC call was never joined here", r.UserID(), hung.TS.Sub(answered))
			continue
		}
		left := waitEvent(wctx, t, r, resident.EventRTCMembership, pressed, func(ev resident.Event) bool {
			c, _ := ev.Fields["content"].(map[string]any)
			return ours(ev) && len(c) == 0
		})
		rang := slices.ContainsFunc(r.Events(), func(ev resident.Event) bool {
			return ev.Name == resident.EventRTCRing && !ev.TS.Before(pressed) && ev.Str("roomId") == room
		})
		t.Logf("%s: classic hangup %v, MatrixRTC call left %v after the tablet answered (ring seen: %v)",
			r.UserID(), hung.TS.Sub(answered), left.TS.Sub(answered), rang)
		if d := left.TS.Sub(answered); d > time.Second {
			t.Errorf("%s: MatrixRTC call left %v after the tablet answered, want ≤ 1 s", r.UserID(), d)
		}
	}
	st := s.waitStatus(ctx, "in the household call, ringer off", func(st status) bool {
		return st.State == "in_call" && !st.Ringer.Ringing
	})
	t.Logf("status after the tablet answered: %+v", st.Calls)
}

// findEvent waits until ctx ends for an event called name, at or after
// since, that match accepts; false if none came.
func findEvent(ctx context.Context, r *resident.Resident, name string, since time.Time, match func(resident.Event) bool) (resident.Event, bool) {
	for {
		for _, ev := range r.Events() {
			if ev.Name == name && !ev.TS.Before(since) && match(ev) {
				return ev, true
			}
		}
		select {
		case <-ctx.Done():
			return resident.Event{}, false
		case <-time.After(20 * time.Millisecond):
		}
	}
}
