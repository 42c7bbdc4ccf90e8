package ring

import (
	"context"
	"errors"
	"slices"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/doorbell/intercom/callengine"
)

// fakeLine is a path whose status the test sets; it records what the
// coordinator asked of it.
type fakeLine struct {
	mu       sync.Mutex
	st       callengine.Status
	subs     []chan callengine.Status
	ringErr  error
	rings    int
	withdraw int
	hangups  int
	// onRing, if set, is the status the line shows once rung.
	onRing *callengine.Status
	rung   []callengine.Resident // of the last Ring
}

func newFakeLine() *fakeLine { return &fakeLine{st: callengine.Status{Phase: callengine.PhaseIdle}} }

func (f *fakeLine) Ring(_ context.Context, residents []callengine.Resident) error {
	f.mu.Lock()
	f.rings++
	f.rung = residents
	err, next := f.ringErr, f.onRing
	f.mu.Unlock()
	if err == nil && next != nil {
		f.set(*next)
	}
	return err
}

func (f *fakeLine) Withdraw() { f.mu.Lock(); f.withdraw++; f.mu.Unlock() }
func (f *fakeLine) Hangup()   { f.mu.Lock(); f.hangups++; f.mu.Unlock() }

func (f *fakeLine) Status() callengine.Status {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.st
}

func (f *fakeLine) Subscribe() (<-chan callengine.Status, func()) {
	ch := make(chan callengine.Status, 1)
	f.mu.Lock()
	f.subs = append(f.subs, ch)
	f.mu.Unlock()
	return ch, func() {}
}

func (f *fakeLine) set(st callengine.Status) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.st = st
	for _, ch := range f.subs {
		select {
		case <-ch:
		default:
		}
		ch <- st
	}
}

func (f *fakeLine) counts() (rings, withdraws, hangups int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.rings, f.withdraw, f.hangups
}

func ringing() *callengine.Status { return &callengine.Status{Phase: callengine.PhaseRinging} }

// TestCoordinator runs a press through real goroutines under synctest:
// every line rings, the merged status rings, the household answers and
// the others are withdrawn; the device sees one merged status.
func TestCoordinator(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		direct, household, rtc := newFakeLine(), newFakeLine(), newFakeLine()
		direct.onRing, household.onRing, rtc.onRing = ringing(), ringing(), ringing()
		c := NewCoordinator(Config{Paths: []PathLine{{Direct, direct}, {Household, household}, {MatrixRTC, rtc}}})
		updates, cancel := c.Subscribe()
		defer cancel()
		ctx, stop := context.WithCancel(t.Context())
		done := make(chan error)
		go func() { done <- c.Run(ctx) }()

		if err := c.Ring(ctx, []callengine.Resident{{User: "@a:x", Room: "!a:x"}}); err != nil {
			t.Fatal(err)
		}
		synctest.Wait()
		if st := c.Status(); st.Phase != callengine.PhaseRinging {
			t.Fatalf("merged phase %s, want ringing", st.Phase)
		}
		if err := c.Ring(ctx, nil); !errors.Is(err, callengine.ErrBusy) {
			t.Fatalf("second press: %v, want busy", err)
		}

		household.set(callengine.Status{Phase: callengine.PhaseInCall, Calls: []callengine.CallStatus{{CallID: "h1", State: callengine.LegConnected}}})
		synctest.Wait()
		for name, l := range map[string]*fakeLine{"direct": direct, "matrixrtc": rtc} {
			if _, w, _ := l.counts(); w != 1 {
				t.Errorf("%s withdrawn %d times, want once", name, w)
			}
		}
		if _, w, _ := household.counts(); w != 0 {
			t.Errorf("the answering path was withdrawn")
		}
		var last callengine.Status
		select {
		case last = <-updates:
		default:
			t.Fatal("no merged status published")
		}
		if last.Phase != callengine.PhaseInCall || len(last.Calls) != 1 {
			t.Fatalf("merged status %+v", last)
		}

		c.Hangup()
		for name, l := range map[string]*fakeLine{"direct": direct, "household": household, "matrixrtc": rtc} {
			if _, _, h := l.counts(); h != 1 {
				t.Errorf("%s hung up %d times", name, h)
			}
		}
		stop()
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		if err := c.Ring(t.Context(), nil); !errors.Is(err, callengine.ErrStopped) {
			t.Fatalf("press after Run: %v", err)
		}
	})
}

// A line that takes the ring but never shows it holds the door for
// StartGrace on the coordinator's clock, then lets go.
func TestCoordinatorStartGrace(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		direct, household := newFakeLine(), newFakeLine()
		direct.ringErr = callengine.ErrNoResidents
		c := NewCoordinator(Config{Paths: []PathLine{{Direct, direct}, {Household, household}}})
		ctx, stop := context.WithCancel(t.Context())
		defer stop()
		go func() { _ = c.Run(ctx) }()
		if err := c.Ring(ctx, nil); err != nil {
			t.Fatal(err)
		}
		synctest.Wait()
		if c.Status().Phase != callengine.PhaseRinging {
			t.Fatalf("phase %s", c.Status().Phase)
		}
		time.Sleep(StartGrace - time.Millisecond)
		synctest.Wait()
		if c.Status().Phase != callengine.PhaseRinging {
			t.Fatalf("phase %s before the grace ran out", c.Status().Phase)
		}
		time.Sleep(time.Millisecond)
		synctest.Wait()
		if c.Status().Phase != callengine.PhaseIdle {
			t.Fatalf("phase %s after the grace", c.Status().Phase)
		}
	})
}

// Residents who ask for one path are rung only on it; a path none of the
// press's residents is rung on is not asked at all and does not stop the
// others, and the press still rings.
func TestCoordinatorRingsResidentsOnTheirPaths(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		direct, rtc := newFakeLine(), newFakeLine()
		direct.onRing, rtc.onRing = ringing(), ringing()
		only := map[callengine.UserID]Path{"@x:h": MatrixRTC, "@c:h": Direct}
		c := NewCoordinator(Config{Paths: []PathLine{{Direct, direct}, {MatrixRTC, rtc}},
			Rings: func(p Path, u callengine.UserID) bool { o, ok := only[u]; return !ok || o == p }})
		ctx, stop := context.WithCancel(t.Context())
		defer stop()
		go func() { _ = c.Run(ctx) }()

		all := []callengine.Resident{{User: "@b:h", Room: "!b"}, {User: "@c:h", Room: "!c"}, {User: "@x:h", Room: "!x"}}
		if err := c.Ring(ctx, all); err != nil {
			t.Fatal(err)
		}
		synctest.Wait()
		users := func(rs []callengine.Resident) (out []callengine.UserID) {
			for _, r := range rs {
				out = append(out, r.User)
			}
			return out
		}
		if got := users(direct.rung); !slices.Equal(got, []callengine.UserID{"@b:h", "@c:h"}) {
			t.Errorf("classic calls to %v, want @b:h and @c:h", got)
		}
		if got := users(rtc.rung); !slices.Equal(got, []callengine.UserID{"@b:h", "@x:h"}) {
			t.Errorf("MatrixRTC rings %v, want @b:h and @x:h", got)
		}
		c.Hangup()
		direct.set(callengine.Status{Phase: callengine.PhaseIdle})
		rtc.set(callengine.Status{Phase: callengine.PhaseIdle})
		synctest.Wait()

		// Only a MatrixRTC-only resident: the classic path is skipped,
		// the press rings.
		direct.rung = nil
		if err := c.Ring(ctx, all[2:]); err != nil {
			t.Fatalf("press with only a MatrixRTC resident: %v", err)
		}
		synctest.Wait()
		if r, _, _ := direct.counts(); r != 1 || direct.rung != nil {
			t.Errorf("classic path asked again (%d rings, %v)", r, direct.rung)
		}
		if r, _, _ := rtc.counts(); r != 2 {
			t.Errorf("MatrixRTC rung %d times, want 2", r)
		}
	})
}
