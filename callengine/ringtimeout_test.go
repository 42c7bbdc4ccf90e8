package callengine

import (
	"context"
	"testing"
	"testing/synctest"
	"time"
)

// SetRingTimeout applies to the next ring: the invite's lifetime and the
// ring timer follow it, and a ring already under way keeps its own.
func TestEngineSetRingTimeout(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx, cancel := context.WithCancel(t.Context())
		e, tr, _, done := startEngine(t, ctx)
		e.SetRingTimeout(20 * time.Second)
		e.SetRingTimeout(0) // ignored
		synctest.Wait()
		if err := e.Ring(ctx, both); err != nil {
			t.Fatal(err)
		}
		synctest.Wait()
		for _, inv := range tr.of(TypeInvite) {
			if got := inv.Content["lifetime"]; got != float64(20000) {
				t.Fatalf("invite lifetime %v, want 20000", got)
			}
		}
		// Changed mid-ring: this ring still ends at 20 s.
		e.SetRingTimeout(45 * time.Second)
		time.Sleep(19 * time.Second)
		synctest.Wait()
		if e.Status().Phase != PhaseRinging {
			t.Fatalf("ring ended early: %+v", e.Status())
		}
		time.Sleep(2 * time.Second)
		synctest.Wait()
		if hs := tr.of(TypeHangup); len(hs) != 2 || hs[0].Content["reason"] != ReasonInviteTimeout {
			t.Fatalf("hangups after 21 s %+v", hs)
		}
		// The next ring takes the new value.
		if err := e.Ring(ctx, both); err != nil {
			t.Fatal(err)
		}
		synctest.Wait()
		invites := tr.of(TypeInvite)
		if len(invites) != 4 || invites[3].Content["lifetime"] != float64(45000) {
			t.Fatalf("second ring's invites %+v", invites[2:])
		}
		time.Sleep(44 * time.Second)
		synctest.Wait()
		if e.Status().Phase != PhaseRinging {
			t.Fatalf("second ring ended before 45 s: %+v", e.Status())
		}
		time.Sleep(2 * time.Second)
		synctest.Wait()
		if e.Status().Phase != PhaseIdle {
			t.Fatalf("second ring still up after 46 s: %+v", e.Status())
		}
		cancel()
		<-done
	})
}
