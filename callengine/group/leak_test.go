package group

import (
	"fmt"
	"runtime"
	"strings"
	"testing"
	"testing/synctest"
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

// goroutines counts the process's goroutines in one dump of their stacks
// (runtime.NumGoroutine also counts goroutines on their way out), and
// returns the dump.
func goroutines() (int, string) {
	buf := make([]byte, 1<<20)
	stacks := string(buf[:runtime.Stack(buf, true)])
	return strings.Count(stacks, "\ngoroutine ") + 1, stacks
}

// Fifty household calls, ended every way (the device hangs up, the door
// hangs up, another path answers first, nobody connects in time), leave
// every peer closed and no goroutine behind: the runner's helpers (peer
// creation and closing, the sender) all belong to its group.
func TestRunnerCallsLeaveNothing(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := startRunner(t, membershipOf(fxTablet, fxTabletDev, fxTabletSes))
		var baseline int
		for i := range 50 {
			// The tablet's app refreshes its membership, as famedly's does.
			h.r.HandleState(membershipOf(fxTablet, fxTabletDev, fxTabletSes))
			if err := h.r.Ring(t.Context(), nil); err != nil {
				t.Fatal(err)
			}
			synctest.Wait()
			id := fmt.Sprintf("call-%d", i)
			kind := i % 4
			if kind != 2 {
				inv := toDevice(FamilyFamedly, "invite", fxTabletDev, fxTabletSes, fxSession, 0, invite(id))
				h.r.HandleToDevice(inv.Sender, inv.Type, inv.Content)
				synctest.Wait()
			}
			switch kind {
			case 0: // connected, then the device hangs up
				peers := h.pf.all()
				peers[len(peers)-1].connect()
				synctest.Wait()
				h.wantPhase(t, callengine.PhaseInCall)
				hup := toDevice(FamilyFamedly, "hangup", fxTabletDev, fxTabletSes, fxSession, 1,
					&callengine.Hangup{Common: callengine.Common{CallID: callengine.CallID(id), PartyID: "TP", Version: "1"}})
				h.r.HandleToDevice(hup.Sender, hup.Type, hup.Content)
			case 1: // connected, then the door hangs up
				peers := h.pf.all()
				peers[len(peers)-1].connect()
				synctest.Wait()
				h.r.Hangup()
			case 2: // answered on another path before any device called
				h.r.Withdraw()
			case 3: // never connects: the ring times out
				time.Sleep(31 * time.Second)
			}
			time.Sleep(time.Minute) // past the call's timers
			synctest.Wait()
			h.wantPhase(t, callengine.PhaseIdle)
			for j, p := range h.pf.all() {
				if !p.isClosed() {
					t.Fatalf("after call %d (kind %d): peer %d still open", i, kind, j)
				}
			}
			if n, stacks := goroutines(); i == 0 {
				baseline = n
			} else if n > baseline {
				t.Fatalf("after call %d (kind %d): %d goroutines, %d after the first:\n%s", i, kind, n, baseline, stacks)
			}
		}
	})
}
