package callengine

import (
	"fmt"
	"testing"
	"time"
)

// Issue 19, finding 8: an invite the intercom only answers with
// m.call.reject (a caller not allowed to watch, or busy) costs a send to
// the homeserver each; a flood of them must not become a flood of
// rejects.

func countRejects(effs []Effect) int {
	n := 0
	for _, s := range sends(effs) {
		if s.Type == TypeReject {
			n++
		}
	}
	return n
}

func TestRejectsLimitedPerSender(t *testing.T) {
	t.Run("not allowed to watch", func(t *testing.T) {
		h := liveViewHarness(t)
		rejects := 0
		for i := range 50 {
			rejects += countRejects(h.step(from(roomA, mallory, inviteFrom(CallID(fmt.Sprint("m", i)), "M"))))
		}
		if rejects != 5 {
			t.Fatalf("%d rejects for 50 invites at once, want the burst of 5", rejects)
		}
		effs := h.step(from(roomA, mallory, inviteFrom("m-extra", "M")))
		if ig := find[Ignored](effs); len(effs) != 1 || ig == nil || !ig.Quiet {
			t.Fatalf("invite over the limit: %#v, want one quiet Ignored", effs)
		}
		// Another sender has a bucket of its own.
		if n := countRejects(h.step(from(roomA, "@eve:test", inviteFrom("e1", "E")))); n != 1 {
			t.Fatalf("eve's first invite: %d rejects", n)
		}
		// One token comes back every 12 s.
		h.advance(12 * time.Second)
		rejects = 0
		for i := range 5 {
			rejects += countRejects(h.step(from(roomA, mallory, inviteFrom(CallID(fmt.Sprint("n", i)), "M"))))
		}
		if rejects != 1 {
			t.Fatalf("%d rejects 12 s later, want 1", rejects)
		}
	})
	t.Run("busy", func(t *testing.T) {
		h := liveViewHarness(t)
		h.step(from(roomA, alice, inviteFrom("2000lv", aliceDev)))
		h.step(CallAccepted{CallID: "2000lv", AnswerSDP: testSDP})
		rejects := 0
		for i := range 50 {
			rejects += countRejects(h.step(from(roomB, bob, inviteFrom(CallID(fmt.Sprint("b", i)), bobDev))))
		}
		if rejects != 5 || h.m.Phase() != PhaseInCall {
			t.Fatalf("%d rejects for 50 invites while busy, want 5; phase %s", rejects, h.m.Phase())
		}
	})
}

func find[T Effect](effs []Effect) *T {
	for _, e := range effs {
		if x, ok := e.(T); ok {
			return &x
		}
	}
	return nil
}

func TestSenderBuckets(t *testing.T) {
	t0 := time.Unix(1_700_000_000, 0)
	b := senderBuckets{limit: RateLimit{Burst: 2, Every: 10 * time.Second}}
	take := func(at time.Duration, who UserID) bool { return b.allow(t0.Add(at), who) }
	if !take(0, alice) || !take(0, alice) || take(0, alice) {
		t.Fatal("burst of 2 not enforced")
	}
	if take(9*time.Second, alice) || !take(10*time.Second, alice) {
		t.Fatal("one token per 10 s not earned")
	}
	// A clock that goes back earns nothing.
	if take(-time.Hour, alice) {
		t.Fatal("a clock jump back refilled the bucket")
	}
	// Idle long enough, the bucket is full again, never fuller.
	if !take(time.Hour, alice) || !take(time.Hour, alice) || take(time.Hour, alice) {
		t.Fatal("refill beyond the burst")
	}

	// Memory is bounded: once maxBuckets senders are remembered, full
	// buckets are forgotten to make room; with none full, a new sender
	// gets no reject.
	b = senderBuckets{limit: RateLimit{Burst: 1, Every: time.Minute}}
	for i := range maxBuckets {
		b.allow(t0, UserID(fmt.Sprint("@s", i, ":test")))
	}
	if b.allow(t0, "@new:test") {
		t.Fatal("a new sender was answered with every bucket empty")
	}
	if !b.allow(t0.Add(time.Minute), "@new:test") || len(b.buckets) > maxBuckets {
		t.Fatalf("refilled buckets not forgotten: %d remembered", len(b.buckets))
	}
}
