package group

import (
	"fmt"
	"testing"
	"time"

	"github.com/doorbell/intercom/callengine"
)

// Issue 15, "nothing leaks": a call's reorder buffer (one per sender and
// call) goes when the call ends, whoever ends it. Before, only the
// device's own hangup or reject removed it, or the intercom leaving the
// group call: in a long live view the buffers of calls the door ended
// itself piled up until maxReorderCalls refused every new call.
func TestReorderBuffersFollowCalls(t *testing.T) {
	h := newHarness(t)
	h.join()
	h.deviceMember(fxTablet, "A", "sA")
	h.deviceMember(fxTablet, "B", "sB")
	// Device A watches throughout, so the intercom stays in the call.
	h.step(toDevice(FamilyFamedly, "invite", "A", "sA", fxSession, 0, invite("keep")))
	h.step(OfferAccepted{CallID: "keep", SDP: fxSDP, StreamID: "s"})
	h.step(PeerChanged{CallID: "keep", State: callengine.PeerConnected})
	if h.m.Phase() != PhaseInCall {
		t.Fatalf("phase %s, want in call", h.m.Phase())
	}
	for i := range maxReorderCalls + 44 {
		id := fmt.Sprintf("b-%03d", i)
		effs := h.step(toDevice(FamilyFamedly, "invite", "B", "sB", fxSession, 0, invite(id)))
		if find[AcceptOffer](effs) == nil {
			t.Fatalf("call %d from device B not answered: %v", i, effs)
		}
		// It never connects: the door ends it (connect timeout).
		h.advance(time.Second)
		effs = h.step(TimerFired{ID: TimerID{Kind: TimerConnect, Key: id}})
		if find[ClosePeer](effs) == nil {
			t.Fatalf("call %d not ended by its connect timeout: %v", i, effs)
		}
		// Events of calls the door never had leave nothing either.
		h.step(toDevice(FamilyFamedly, "candidates", "B", "sB", fxSession, 0, cands(fmt.Sprintf("ghost-%03d", i), "candidate:1")))
		if n := len(h.m.reorder); n != 1 {
			t.Fatalf("after call %d: %d reorder buffers, want 1 (device A's call)", i, n)
		}
	}
	// An ended call's repeated invite is still recognised: no new call.
	effs := h.step(toDevice(FamilyFamedly, "invite", "B", "sB", fxSession, 0, invite(fmt.Sprintf("b-%03d", maxReorderCalls+43))))
	if find[AcceptOffer](effs) != nil {
		t.Fatalf("a repeated invite of an ended call was answered: %v", effs)
	}
	if h.m.Phase() != PhaseInCall || len(h.m.legs) != 1 {
		t.Fatalf("phase %s with %d calls, want device A's call only", h.m.Phase(), len(h.m.legs))
	}
}
