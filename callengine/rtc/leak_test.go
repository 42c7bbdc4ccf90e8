package rtc

import (
	"testing"
	"testing/synctest"

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
