package daemon

import (
	"testing"
	"time"

	"github.com/doorbell/intercom/callengine"
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
