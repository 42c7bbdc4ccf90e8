package e2e

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/doorbell/intercom/internal/testenv/resident"
)

// roomOf returns the direct room the resident joined at start-up.
func roomOf(t testing.TB, r *resident.Resident) string {
	t.Helper()
	for _, ev := range r.Events() {
		if ev.Name == "joined" {
			if room := ev.Str("roomId"); room != "" {
				return room
			}
		}
	}
	t.Fatalf("%s joined no room", r.UserID())
	return ""
}

// callStarted places a call and returns its call ID and when it began.
func callStarted(ctx context.Context, t testing.TB, r *resident.Resident, room string) (string, time.Time) {
	t.Helper()
	if err := r.PlaceCall(room); err != nil {
		t.Fatal(err)
	}
	ev, err := r.WaitFor(ctx, "placing")
	if err != nil {
		t.Fatal(err)
	}
	return ev.CallID(), ev.TS
}

// TestLiveViewAndBusy: a resident calls the door and the intercom answers
// by itself with camera and microphone; a second resident calling meanwhile
// is turned away at once with user_busy.
func TestLiveViewAndBusy(t *testing.T) {
	e := startSystem(t, "frank", "grace")
	frank, grace := e.residents[0], e.residents[1]
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()

	_, placed := callStarted(ctx, t, frank, roomOf(t, frank))
	ff, err := frank.WaitFor(ctx, "first_frame")
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("live view: call → first frame %v (%vx%v)", ff.TS.Sub(placed), ff.Fields["width"], ff.Fields["height"])
	if ff.Num("width") != 640 || ff.Num("height") != 480 {
		t.Errorf("frame %vx%v", ff.Fields["width"], ff.Fields["height"])
	}
	s := e.waitStatus(ctx, "watching", func(s status) bool {
		return s.State == "in_call" && len(s.Calls) == 1 && s.Calls[0].State == "connected" && s.Media.ReceivedAudio.Packets > 20
	})
	if s.Calls[0].Direction != "inbound" || s.Calls[0].Resident != frank.UserID() || s.Ringer.Ringing {
		t.Fatalf("status %+v", s)
	}

	_, busyAt := callStarted(ctx, t, grace, roomOf(t, grace))
	h, err := grace.WaitFor(ctx, "hangup")
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("busy: grace's call ended after %v: %v", h.TS.Sub(busyAt), h.Fields)
	if h.Str("party") != "remote" {
		t.Errorf("grace's call was not ended by the intercom: %v", h.Fields)
	}
	if d := h.TS.Sub(busyAt); d > 10*time.Second {
		t.Errorf("busy took %v; the caller must not ring on", d)
	}

	if err := frank.Hangup(); err != nil {
		t.Fatal(err)
	}
	e.waitStatus(ctx, "idle", func(s status) bool { return s.State == "idle" })
}

// TestGlare: a resident calls the door at the moment the door rings them.
// The older call (the resident's, placed first) survives: the intercom
// answers it and drops its own, and the resident sees one call.
func TestGlare(t *testing.T) {
	e := startSystem(t, "heidi", "ivan")
	heidi, ivan := e.residents[0], e.residents[1]
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()

	// Heidi's call exists (its ID is taken) before the press, but its
	// invite leaves only once the door is ringing her: glare, with her
	// call the older one.
	placed := make(chan error, 1)
	go func() {
		_, err := heidi.Do(ctx, "placeCall", map[string]any{"roomId": roomOf(t, heidi), "delayMs": 1500})
		placed <- err
	}()
	pl, err := heidi.WaitFor(ctx, "placing")
	if err != nil {
		t.Fatal(err)
	}
	theirs := pl.CallID()
	e.press()
	e.waitStatus(ctx, "ringing", func(s status) bool { return s.State == "ringing" })
	if err := <-placed; err != nil {
		t.Fatal(err)
	}
	defer func() {
		if t.Failed() {
			for _, ev := range heidi.Events() {
				if ev.Name != "stats" {
					t.Logf("heidi: %s %v", ev.Name, ev.Fields)
				}
			}
		}
	}()
	ff, err := heidi.WaitFor(ctx, "first_frame")
	if err != nil {
		t.Fatal(err)
	}
	if ff.CallID() != theirs {
		t.Errorf("heidi sees call %s, want her own %s", ff.CallID(), theirs)
	}
	s := e.waitStatus(ctx, "in call after glare", func(s status) bool {
		return s.State == "in_call" && slices.ContainsFunc(s.Calls, func(c callStatus) bool {
			return c.Direction == "inbound" && c.State == "connected"
		})
	})
	for _, c := range s.Calls {
		switch {
		case c.Direction == "inbound":
		case c.Resident == heidi.UserID() && c.Reason != "replaced":
			t.Errorf("the door's call to heidi ended with %q, want replaced", c.Reason)
		case c.Resident == ivan.UserID() && c.State != "ended":
			t.Errorf("ivan still rings: %+v", c)
		}
	}
	// Ivan stopped ringing too.
	if _, err := ivan.WaitFor(ctx, "hangup"); err != nil {
		t.Fatal(err)
	}
	// Her page's "current" call is the door's, which ended: name hers.
	if _, err := heidi.Do(ctx, "hangup", map[string]any{"callId": theirs}); err != nil {
		t.Fatal(err)
	}
	e.waitStatus(ctx, "idle", func(s status) bool { return s.State == "idle" })
}
