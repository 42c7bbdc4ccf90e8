package callengine

import (
	"context"
	"errors"
	"runtime"
	"strings"
	"testing"
	"testing/synctest"
	"time"
)

// Issue 15, "nothing leaks": every table of the engine's loop is empty
// again once its calls are over, whatever way they ended, and its
// goroutines are back to what an idle engine runs.

// engineTables are the sizes of the loop's tables.
type engineTables struct {
	slots, calls, outboxes, timers, pool int
}

// tables reads the loop's tables on its own goroutine.
func tables(t *testing.T, e *Engine) engineTables {
	t.Helper()
	got := make(chan engineTables, 1)
	e.inbox.Push(inspect(func(r *runner) {
		got <- engineTables{slots: len(r.slots), calls: len(r.calls), outboxes: len(r.out), timers: r.timers.Len(), pool: len(r.pool)}
	}))
	select {
	case tb := <-got:
		return tb
	case <-time.After(time.Minute):
		t.Fatal("the engine's loop did not answer")
		return engineTables{}
	}
}

// failingFactory makes peers until fails is set, then refuses.
type failingFactory struct {
	fakeFactory
	fails bool
}

var errNoPeer = errors.New("test: no more peers")

func (f *failingFactory) NewPeer(ctx context.Context, sink func(PeerEvent)) (Peer, error) {
	f.mu.Lock()
	fail := f.fails || len(f.peers) >= 1
	f.mu.Unlock()
	if fail {
		return nil, errNoPeer
	}
	return f.fakeFactory.NewPeer(ctx, sink)
}

// A ring that fails part-way (the second resident's peer cannot be made)
// leaves no call behind: the first resident's call entry goes with its
// peer. The machine never heard of that call, so before this nothing
// removed the entry.
func TestEngineFailedRingLeavesNothing(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx, cancel := context.WithCancel(t.Context())
		pf := &failingFactory{}
		// No pool: each ring makes its peers there and then.
		e := NewEngine(EngineConfig{Machine: DefaultConfig(ourParty), OwnUser: "@intercom:test"}, &fakeTransport{}, pf)
		done := make(chan struct{})
		go func() { defer close(done); _ = e.Run(ctx) }()
		if err := e.Ring(ctx, both); !errors.Is(err, errNoPeer) {
			t.Fatalf("ring: %v, want the factory's error", err)
		}
		synctest.Wait()
		if tb := tables(t, e); tb != (engineTables{}) {
			t.Errorf("after a failed ring the engine holds %+v, want nothing", tb)
		}
		if pf.closedCount() != 1 {
			t.Errorf("%d of the 1 peer made closed", pf.closedCount())
		}
		if st := e.Status(); st.Phase != PhaseIdle {
			t.Errorf("phase %s after a failed ring", st.Phase)
		}
		cancel()
		<-done
	})
}

// A hundred calls, ended every way a call ends (answered and hung up by
// the resident, rejected, timed out, hung up from the door), leave the
// tables as an idle engine has them and no goroutine behind.
func TestEngineCallsLeaveNothing(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx, cancel := context.WithCancel(t.Context())
		e, tr, _, done := startEngine(t, ctx)
		synctest.Wait()
		idle := tables(t, e)
		if idle.pool != 2 || idle.slots != 2 || idle.calls+idle.outboxes+idle.timers != 0 {
			t.Fatalf("idle engine %+v, want the 2 pooled peers only", idle)
		}
		var baseline int
		for i := range 100 {
			if err := e.Ring(ctx, both); err != nil {
				t.Fatalf("call %d: %v", i, err)
			}
			synctest.Wait()
			invites := tr.of(TypeInvite)
			callA := CallID(invites[len(invites)-2].Content["call_id"].(string))
			if invites[len(invites)-2].Room != roomA {
				callA = CallID(invites[len(invites)-1].Content["call_id"].(string))
			}
			switch i % 4 {
			case 0: // answered, connected, hung up by alice
				e.HandleRoomEvent(roomEvent(roomA, alice, TypeAnswer, answerFrom(callA, aliceDev)))
				synctest.Wait()
				e.inbox.Push(PeerChanged{CallID: callA, State: PeerConnected})
				synctest.Wait()
				e.HandleRoomEvent(roomEvent(roomA, alice, TypeHangup, Hangup{Common: Common{CallID: callA, PartyID: aliceDev, Version: "1"}, Reason: ReasonUserHangup}))
			case 1: // rejected by alice, then nobody: ring timeout
				e.HandleRoomEvent(roomEvent(roomA, alice, TypeReject, Reject{Common: Common{CallID: callA, PartyID: aliceDev, Version: "1"}}))
			case 2: // hung up from the door while ringing
				e.Hangup()
			case 3: // answered, then hung up from the door
				e.HandleRoomEvent(roomEvent(roomA, alice, TypeAnswer, answerFrom(callA, aliceDev)))
				synctest.Wait()
				e.inbox.Push(PeerChanged{CallID: callA, State: PeerConnected})
				synctest.Wait()
				e.Hangup()
			}
			time.Sleep(2 * time.Minute) // past every timer of a call
			synctest.Wait()
			if st := e.Status(); st.Phase != PhaseIdle {
				t.Fatalf("call %d (kind %d): phase %s", i, i%4, st.Phase)
			}
			if tb := tables(t, e); tb != idle {
				t.Fatalf("after call %d (kind %d) the engine holds %+v, want %+v as when idle", i, i%4, tb, idle)
			}
			// Goroutines, once the first call has started whatever
			// runs for good. Counted in one stack dump, which stops
			// the world: runtime.NumGoroutine also counts goroutines
			// on their way out.
			if n, stacks := goroutines(); i == 0 {
				baseline = n
			} else if n > baseline {
				t.Fatalf("after call %d: %d goroutines, %d after the first:\n%s", i, n, baseline, stacks)
			}
		}
		cancel()
		<-done
	})
}

// goroutines counts the process's goroutines in one dump of their stacks,
// and returns the dump.
func goroutines() (int, string) {
	buf := make([]byte, 1<<20)
	stacks := string(buf[:runtime.Stack(buf, true)])
	return strings.Count(stacks, "\ngoroutine ") + 1, stacks
}
