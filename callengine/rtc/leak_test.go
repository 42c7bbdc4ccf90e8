package rtc

import (
	"encoding/json"
	"runtime"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/doorbell/intercom/callengine"
)

// Issue 15, "nothing leaks": a room hung up and rung again before its
// first SFU connection came up has two connection attempts under way.
// Only the latest belongs to the call; the earlier one's connection is
// closed when it comes, not kept in place of (or over) the latest. Before,
// whichever came second replaced the other in the runner's table and the
// first was never closed.
func TestRunnerStaleSFUJoinClosed(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		gate := make(chan struct{})
		sfu := &fakeSFU{gate: gate} // Join waits for the gate, whatever its context
		h := startRTC(t, sfu)
		one := residents[:1]
		for range 2 {
			if err := h.r.Ring(t.Context(), one); err != nil {
				t.Fatal(err)
			}
			synctest.Wait()
			h.r.Hangup()
			synctest.Wait()
		}
		if err := h.r.Ring(t.Context(), one); err != nil {
			t.Fatal(err)
		}
		synctest.Wait()
		close(gate) // every attempt's connection comes up now
		synctest.Wait()
		sfu.mu.Lock()
		conns := append([]*fakeConn(nil), sfu.conns[roomA]...)
		sfu.mu.Unlock()
		if len(conns) != 3 {
			t.Fatalf("%d connections made, want 3 (one per ring)", len(conns))
		}
		open := 0
		for _, c := range conns {
			if !c.isClosed() {
				open++
			}
		}
		if open != 1 {
			t.Fatalf("%d connections open while one ring rings, want 1", open)
		}
		if st := h.r.Status(); st.Phase != callengine.PhaseRinging {
			t.Fatalf("phase %s, want the last ring still ringing", st.Phase)
		}
		h.r.Hangup()
		synctest.Wait()
		if !sfu.allClosed() {
			t.Fatal("a connection was left open after the hangup")
		}
		h.shutdown()
	})
}

// goroutines counts the process's goroutines in one dump of their stacks
// (runtime.NumGoroutine also counts goroutines on their way out), and
// returns the dump.
func goroutines() (int, string) {
	buf := make([]byte, 1<<20)
	stacks := string(buf[:runtime.Stack(buf, true)])
	return strings.Count(stacks, "\ngoroutine ") + 1, stacks
}

// Forty MatrixRTC calls, ended every way (answered then hung up from the
// door, declined then timed out, answered on another path, hung up while
// ringing), leave every SFU connection closed and no goroutine behind
// but the rooms' send queues, made at the first call.
func TestRunnerCallsLeaveNothing(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := startRTC(t, &fakeSFU{})
		var baseline int
		for i := range 40 {
			kind := i % 4
			if err := h.r.Ring(t.Context(), residents); err != nil {
				t.Fatal(err)
			}
			synctest.Wait()
			switch kind {
			case 0: // alice answers, the door hangs up
				h.sfu.conn(roomA).presence(alice.Identity(), true)
				h.r.HandleState(stateOf(roomA, joinEvent(alice, time.Now())))
				synctest.Wait()
				if st := h.r.Status(); st.Phase != callengine.PhaseInCall {
					t.Fatalf("call %d: status %+v after alice joined", i, st)
				}
				h.r.Hangup()
			case 1: // both decline, the household room times out
				for _, r := range residents {
					decline, _ := json.Marshal(map[string]any{"m.relates_to": map[string]string{"rel_type": "m.reference", "event_id": "$ring-" + string(r.Room)}})
					h.r.HandleRoomEvent(callengine.RoomEvent{Room: r.Room, Sender: r.User, Type: TypeDecline, Content: decline})
				}
				time.Sleep(61 * time.Second)
			case 2:
				h.r.Withdraw()
			case 3:
				h.r.Hangup()
			}
			time.Sleep(2 * time.Minute) // past every timer of a call
			synctest.Wait()
			if st := h.r.Status(); st.Phase != callengine.PhaseIdle {
				t.Fatalf("call %d (kind %d): status %+v", i, kind, st)
			}
			if !h.sfu.allClosed() {
				t.Fatalf("call %d (kind %d): an SFU connection left open", i, kind)
			}
			if n, stacks := goroutines(); i == 0 {
				baseline = n
			} else if n > baseline {
				t.Fatalf("after call %d (kind %d): %d goroutines, %d after the first:\n%s", i, kind, n, baseline, stacks)
			}
		}
	})
}
