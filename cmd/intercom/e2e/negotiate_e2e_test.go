package e2e

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/doorbell/intercom/internal/testenv/resident"
)

// negotiateTimeout bounds one m.call.negotiate round trip through the
// homeserver (about 100 ms on loopback).
const negotiateTimeout = 10 * time.Second

// waitNegotiate returns the next m.call.negotiate of the call callID whose
// description has type typ ("offer" or "answer"), from the intercom.
func waitNegotiate(ctx context.Context, t testing.TB, r *resident.Resident, callID, typ string) resident.Event {
	t.Helper()
	return waitNegotiateWithin(ctx, t, r, callID, typ, negotiateTimeout)
}

// waitNegotiateWithin is waitNegotiate with its own time limit.
func waitNegotiateWithin(ctx context.Context, t testing.TB, r *resident.Resident, callID, typ string, d time.Duration) resident.Event {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	for {
		ev, err := r.WaitFor(ctx, resident.EventNegotiate)
		if err != nil {
			t.Fatalf("no m.call.negotiate %s from the intercom: %v", typ, err)
		}
		if ev.CallID() == callID && ev.Str("type") == typ {
			return ev
		}
		t.Logf("ignoring m.call.negotiate %v", ev.Fields)
	}
}

// waitICE returns the next ICE state change of r's call to one of states.
func waitICE(ctx context.Context, t testing.TB, r *resident.Resident, states ...string) resident.Event {
	t.Helper()
	for {
		ev, err := r.WaitFor(ctx, resident.EventICE)
		if err != nil {
			t.Fatalf("ICE never reached %v: %v", states, err)
		}
		if slices.Contains(states, ev.Str("state")) {
			return ev
		}
	}
}

// waitStats waits for stats of r that satisfy cond.
func waitStats(ctx context.Context, t testing.TB, r *resident.Resident, what string, cond func(resident.Stats) bool) resident.Stats {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	for {
		st := r.LastStats()
		if cond(st) {
			return st
		}
		select {
		case <-ctx.Done():
			t.Fatalf("%s: never %s; last stats %+v", r.UserID(), what, st)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// framesIn returns how many frames r decodes in d.
func framesIn(r *resident.Resident, d time.Duration) int {
	before := r.LastStats().FramesDecoded
	time.Sleep(d)
	return r.LastStats().FramesDecoded - before
}

// directions returns the "audio:sendrecv"-style m-line directions of a
// negotiate event.
func directions(ev resident.Event) []string {
	list, _ := ev.Fields["directions"].([]any)
	out := make([]string, 0, len(list))
	for _, d := range list {
		s, _ := d.(string)
		out = append(out, s)
	}
	return out
}

// TestHoldAndICERestartFromResident: in a connected call the resident
// holds and unholds the intercom and then restarts ICE, each time with an
// m.call.negotiate offer (Matrix spec, VoIP: renegotiation). The intercom
// answers every one; the call stays connected, video stops while held and
// flows again after, and the ICE restart ends with new credentials on both
// sides and frames still coming.
func TestHoldAndICERestartFromResident(t *testing.T) {
	e := startSystemWith(t, systemOptions{}, "kim")
	kim := e.residents[0]
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()

	fromPress, fromAnswer := e.answerCall(ctx, kim)
	t.Logf("press → first frame %v, answer → first frame %v", fromPress, fromAnswer)
	st := waitFrames(ctx, t, kim, 20)
	callID := st.CallID
	connected := func(what string) {
		t.Helper()
		e.waitStatus(ctx, what, func(s status) bool {
			return s.State == "in_call" && len(s.Calls) == 1 && s.Calls[0].State == "connected"
		})
	}

	// Hold: js-sdk makes every transceiver sendonly and offers that.
	held, err := kim.Hold(ctx, true)
	if err != nil {
		t.Fatal(err)
	}
	asked := time.Now()
	ans := waitNegotiate(ctx, t, kim, callID, "answer")
	t.Logf("hold: answered in %v with %v", ans.TS.Sub(asked), directions(ans))
	if ans.Str("ufrag") != held.Remote {
		t.Errorf("hold answer changed the ICE ufrag %q → %q", held.Remote, ans.Str("ufrag"))
	}
	for _, d := range directions(ans) {
		// Nothing may go to a resident who holds the call: the answer to
		// their sendonly offer is recvonly or inactive (RFC 8829 5.3.1).
		if !slices.Contains([]string{"audio:recvonly", "audio:inactive", "video:recvonly", "video:inactive"}, d) {
			t.Errorf("hold answer direction %s", d)
		}
	}
	time.Sleep(500 * time.Millisecond) // let the answer apply and the pipeline drain
	if n := framesIn(kim, time.Second); n > 2 {
		t.Errorf("kim decoded %d frames in a second while holding the call", n)
	} else {
		t.Logf("held: %d frames in a second", n)
	}
	connected("connected while held")

	// Unhold: sendrecv again, and the video resumes.
	if _, err := kim.Hold(ctx, false); err != nil {
		t.Fatal(err)
	}
	asked = time.Now()
	ans = waitNegotiate(ctx, t, kim, callID, "answer")
	t.Logf("unhold: answered in %v with %v", ans.TS.Sub(asked), directions(ans))
	// The door sends again: audio both ways, its video (pion turns the
	// video transceiver sendrecv when offered sendrecv; it drops what the
	// resident sends on it).
	if d := directions(ans); !slices.Contains(d, "audio:sendrecv") ||
		!(slices.Contains(d, "video:sendonly") || slices.Contains(d, "video:sendrecv")) {
		t.Errorf("unhold answer %v, want audio sendrecv and video sending", d)
	}
	frames := kim.LastStats().FramesDecoded
	resumed := waitFrames(ctx, t, kim, frames+15)
	t.Logf("unheld: frames %d → %d within %v", frames, resumed.FramesDecoded, time.Since(asked))
	connected("connected after unhold")

	// ICE restart from the page: new ufrags on both ends (RFC 8445 9).
	before, err := kim.RestartICE(ctx)
	if err != nil {
		t.Fatal(err)
	}
	asked = time.Now()
	ans = waitNegotiate(ctx, t, kim, callID, "answer")
	t.Logf("ICE restart: answered in %v (ufrag %s → %s)", ans.TS.Sub(asked), before.Remote, ans.Str("ufrag"))
	if ans.Str("ufrag") == "" || ans.Str("ufrag") == before.Remote {
		t.Errorf("the intercom's answer kept its ICE ufrag %q", before.Remote)
	}
	// The pair in use belongs to the new ICE generation on both ends.
	renewed := waitStats(ctx, t, kim, "a selected pair with the new ufrags", func(st resident.Stats) bool {
		return st.LocalUfrag != "" && st.LocalUfrag != before.Local && st.RemoteUfrag == ans.Str("ufrag")
	})
	t.Logf("new ICE generation in use %v after the restart (ufrags %s/%s)", renewed.TS.Sub(asked), renewed.LocalUfrag, renewed.RemoteUfrag)
	frames = kim.LastStats().FramesDecoded
	after := waitFrames(ctx, t, kim, frames+15)
	t.Logf("after the ICE restart: frames %d → %d, pair %s → %s", frames, after.FramesDecoded, after.LocalAddress, after.RemoteAddress)
	connected("connected after the ICE restart")
	if after.ConnectionState != "connected" {
		t.Errorf("kim's connection is %s", after.ConnectionState)
	}

	if err := kim.Hangup(); err != nil {
		t.Fatal(err)
	}
	s := e.waitStatus(ctx, "idle", func(s status) bool { return s.State == "idle" })
	if r := s.Calls[0].Reason; r != "user_hangup" {
		t.Errorf("call ended with %q, want user_hangup", r)
	}
}
