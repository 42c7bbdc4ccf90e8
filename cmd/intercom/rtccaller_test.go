package main

import (
	"testing"
	"time"

	"github.com/doorbell/intercom/callengine"
	"github.com/doorbell/intercom/callengine/rtc"
)

func TestMergeRTC(t *testing.T) {
	t0 := time.Now()
	engine := callengine.Status{Phase: callengine.PhaseRinging, Since: t0,
		Calls: []callengine.CallStatus{{CallID: "c1", Room: "!a:x", State: callengine.LegRinging}}}

	// Both ringing: one ring, two legs.
	st := mergeRTC(engine, rtc.Status{Phase: rtc.PhaseRinging, Since: t0, Rooms: []rtc.RoomStatus{{Room: "!a:x"}}})
	if st.Phase != callengine.PhaseRinging || len(st.Calls) != 2 || st.Calls[1].State != callengine.LegRinging {
		t.Fatalf("both ringing: %+v", st)
	}
	if len(engine.Calls) != 1 {
		t.Fatal("merge changed the engine's status")
	}

	// Answered through MatrixRTC after the engine hung up: in a call,
	// with a connected leg naming the resident (the door and the
	// notices read these).
	idle := callengine.Status{Phase: callengine.PhaseIdle, Since: t0.Add(time.Second),
		Calls: []callengine.CallStatus{{CallID: "c1", State: callengine.LegEnded, Reason: "user_hangup"}}}
	st = mergeRTC(idle, rtc.Status{Phase: rtc.PhaseInCall, Since: t0.Add(time.Second), AnsweredBy: "@alice:x:PHONE",
		Rooms: []rtc.RoomStatus{{Room: "!a:x", Answered: true}}})
	if st.Phase != callengine.PhaseInCall || st.Calls[1].State != callengine.LegConnected || st.Calls[1].Resident != "@alice:x" {
		t.Fatalf("answered via MatrixRTC: %+v", st)
	}

	// A classic call in progress is not hidden by MatrixRTC being idle.
	inCall := callengine.Status{Phase: callengine.PhaseInCall, Since: t0}
	if st := mergeRTC(inCall, rtc.Status{Phase: rtc.PhaseIdle, Since: t0.Add(time.Minute)}); st.Phase != callengine.PhaseInCall {
		t.Fatalf("classic call hidden: %+v", st)
	}
}
