package daemon

import (
	"testing"
	"time"

	"github.com/doorbell/intercom/callengine"
	"github.com/doorbell/intercom/callengine/group"
	"github.com/doorbell/intercom/callengine/rtc"
)

// TestRTCRingStatus: the MatrixRTC machine's status as the ring
// coordinator sees it: each rung room a leg, connected and naming the
// resident once answered.
func TestRTCRingStatus(t *testing.T) {
	t0 := time.Now()
	st := ringStatus(rtc.Status{Phase: rtc.PhaseRinging, Since: t0, Rooms: []rtc.RoomStatus{{Room: "!a:x"}}})
	if st.Phase != callengine.PhaseRinging || len(st.Calls) != 1 || st.Calls[0].State != callengine.LegRinging {
		t.Fatalf("ringing: %+v", st)
	}
	st = ringStatus(rtc.Status{Phase: rtc.PhaseInCall, Since: t0, AnsweredBy: "@alice:x:PHONE",
		Rooms: []rtc.RoomStatus{{Room: "!a:x", Answered: true}}})
	if st.Phase != callengine.PhaseInCall || st.Calls[0].State != callengine.LegConnected || st.Calls[0].Resident != "@alice:x" {
		t.Fatalf("answered: %+v", st)
	}
	if st := ringStatus(rtc.Status{}); st.Phase != callengine.PhaseIdle {
		t.Fatalf("zero status: %+v", st)
	}
}

// TestHouseholdRingStatus: a live view is no ring (a press may ring over
// it); an open ring rings even with watchers connected; a device that
// connected after the ring is a call.
func TestHouseholdRingStatus(t *testing.T) {
	watching := []group.CallStatus{{CallID: "w", User: "@alice:x", Outbound: false, State: "connected"}}
	for _, c := range []struct {
		name string
		st   group.Status
		want callengine.Phase
	}{
		{"not joined", group.Status{}, callengine.PhaseIdle},
		{"live view", group.Status{Phase: group.PhaseInCall, LiveView: true, Calls: watching}, callengine.PhaseIdle},
		{"rung over a live view", group.Status{Phase: group.PhaseInCall, Rung: true, Calls: watching}, callengine.PhaseRinging},
		{"rung", group.Status{Phase: group.PhaseRinging, Rung: true}, callengine.PhaseRinging},
		{"answered", group.Status{Phase: group.PhaseInCall, Calls: watching}, callengine.PhaseInCall},
	} {
		st := householdRingStatus(c.st, time.Time{})
		if st.Phase != c.want || len(st.Calls) != len(c.st.Calls) {
			t.Errorf("%s: %+v, want phase %s", c.name, st, c.want)
		}
	}
}
