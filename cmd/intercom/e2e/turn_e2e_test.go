package e2e

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/doorbell/intercom/internal/testenv/dendrite"
	"github.com/doorbell/intercom/internal/testenv/resident"
)

// turnSystem starts coturn, Dendrite handing out credentials for it
// (turn_uris, turn_shared_secret, turn_user_lifetime), the intercom with
// turn.relay_only and the residents with forceTURN: every candidate on
// both sides is a relay candidate, so a call connects through coturn or
// not at all.
func turnSystem(t *testing.T, opts systemOptions, residents ...string) (*e2e, *coturn) {
	t.Helper()
	if testing.Short() {
		t.Skip("end-to-end test: needs coturn, Dendrite and Chromium")
	}
	turn := startCoturn(t)
	opts.Homeserver.TURN = &dendrite.TURN{URIs: []string{turn.URI()}, SharedSecret: turn.Secret, UserLifetime: time.Hour}
	opts.Config += "turn:\n  relay_only: true\n"
	opts.Resident.ForceTURN = true
	return startSystemWith(t, opts, residents...), turn
}

// TestCallOnlyThroughTURN (issue 4): the intercom and the resident both
// use relay candidates only, with TURN credentials from the homeserver
// and a real coturn on 127.0.0.1. The resident sees the test pattern and
// the intercom hears the resident; the selected candidate pair is relay on
// both ends, and coturn allocated relays for both users.
func TestCallOnlyThroughTURN(t *testing.T) {
	e, turn := turnSystem(t, systemOptions{}, "judy")
	judy := e.residents[0]
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()

	fromPress, fromAnswer := e.answerCall(ctx, judy)
	t.Logf("relay-only call: press → first frame %v, answer → first frame %v", fromPress, fromAnswer)

	st := waitFrames(ctx, t, judy, 30)
	s := e.waitStatus(ctx, "in call, hearing judy", func(s status) bool {
		return s.State == "in_call" && len(s.Calls) == 1 && s.Calls[0].State == "connected" && s.Media.ReceivedAudio.Packets > 50
	})
	t.Logf("judy: %d frames (%s), selected pair %s → %s; intercom heard %d packets",
		st.FramesDecoded, st.VideoCodec, st.LocalAddress, st.RemoteAddress, s.Media.ReceivedAudio.Packets)
	// The remote end of judy's selected pair is the intercom's candidate:
	// a relay candidate means the intercom sends and receives through
	// coturn, and judy's own local candidate is her relay.
	if got := candidateType(st.RemoteAddress); got != "relay" {
		t.Errorf("the intercom's side of the selected pair is %q (%s), want relay", got, st.RemoteAddress)
	}
	if got := candidateType(st.LocalAddress); got != "relay" {
		t.Errorf("judy's side of the selected pair is %q (%s), want relay", got, st.LocalAddress)
	}
	intercomUser := fmt.Sprintf("@intercom:%s", e.hs.ServerName)
	if a := turn.allocations(intercomUser); len(a) == 0 {
		t.Errorf("coturn allocated no relay for %s", intercomUser)
	} else {
		t.Logf("coturn allocations for %s: %d", intercomUser, len(a))
	}
	if a := turn.allocations(judy.UserID()); len(a) == 0 {
		t.Errorf("coturn allocated no relay for %s", judy.UserID())
	}

	if err := judy.Hangup(); err != nil {
		t.Fatal(err)
	}
	e.waitStatus(ctx, "idle", func(s status) bool { return s.State == "idle" })
}

// TestIntercomRestartsICE: a relay-only call loses its path when the TURN
// server restarts (every allocation is gone; nothing but a new ICE
// generation with new allocations can carry media again). The resident's
// own ICE restarts are turned off, so it is the intercom that must notice
// (pion's disconnected, held for 2 s) and restart ICE with an
// m.call.negotiate offer; the resident answers and the video comes back
// without the call ending.
func TestIntercomRestartsICE(t *testing.T) {
	e, turn := turnSystem(t, systemOptions{Resident: resident.Options{NoICERestart: true}}, "leo")
	leo := e.residents[0]
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()

	e.answerCall(ctx, leo)
	st := waitFrames(ctx, t, leo, 20)
	callID := st.CallID
	before := st
	t.Logf("call up through %s → %s", st.LocalAddress, st.RemoteAddress)

	cut := time.Now()
	turn.restart()
	t.Logf("coturn restarted in %v: every allocation gone", time.Since(cut))

	offer := waitNegotiateWithin(ctx, t, leo, callID, "offer", 30*time.Second)
	t.Logf("the intercom restarted ICE %v after the cut (ufrag %s → %s)", offer.TS.Sub(cut), before.RemoteUfrag, offer.Str("ufrag"))
	if offer.Str("ufrag") == "" || offer.Str("ufrag") == before.RemoteUfrag {
		t.Errorf("the restart offer kept the ICE ufrag %q", before.RemoteUfrag)
	}
	renewed := waitStats(ctx, t, leo, "a relay pair of the new ICE generation", func(s resident.Stats) bool {
		return s.RemoteUfrag == offer.Str("ufrag") && candidateType(s.RemoteAddress) == "relay" && candidateType(s.LocalAddress) == "relay"
	})
	// Frames frozen since the cut; the first new ones need a keyframe.
	back := waitFrames(ctx, t, leo, max(renewed.FramesDecoded, before.FramesDecoded+1))
	after := waitFrames(ctx, t, leo, back.FramesDecoded+15)
	t.Logf("video back %v after the cut (%v after the restart offer); 15 more frames by %v; frames %d → %d, pair %s → %s",
		back.TS.Sub(cut), back.TS.Sub(offer.TS), after.TS.Sub(cut),
		before.FramesDecoded, after.FramesDecoded, after.LocalAddress, after.RemoteAddress)
	s := e.waitStatus(ctx, "connected after the restart", func(s status) bool {
		return len(s.Calls) == 1 && s.Calls[0].State == "connected"
	})
	if s.State != "in_call" {
		t.Errorf("intercom state %q after the restart", s.State)
	}
	for _, ev := range leo.Events() {
		if ev.Name == resident.EventHangup {
			t.Errorf("the call ended: %v", ev.Fields)
		}
	}

	if err := leo.Hangup(); err != nil {
		t.Fatal(err)
	}
	e.waitStatus(ctx, "idle", func(s status) bool { return s.State == "idle" })
}
