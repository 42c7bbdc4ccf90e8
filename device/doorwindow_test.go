package device

import (
	"testing"
	"time"
)

// Issue 19, finding 1: origin_server_ts is stamped by the homeserver when
// the event arrives, so a phone that was offline sends its queued "!open"
// with a fresh timestamp. Only the call window tells it from a command of
// the moment, so the window is on by default.

// TestDoorPolicyLateCommandRefusedByDefault: with no door.window and no
// door.only_during_call configured, a fresh-looking "!open" while nobody
// rang and no call is connected does not open the door.
func TestDoorPolicyLateCommandRefusedByDefault(t *testing.T) {
	p := NewDoorPolicy(testDoorConfig(), t0, DoorMemory{})
	anchor(p, t0)
	at := t0.Add(5 * time.Hour)
	if d := p.Decide(at, openReq("$queued", alice, at)); d.Verdict != VerdictOutsideWindow {
		t.Fatalf("a queued !open with no ring and no call: %s (%s), want %s", d.Verdict, d.Why, VerdictOutsideWindow)
	}
}

// TestDoorPolicyDefaultWindow: a ring opens a window of three minutes.
func TestDoorPolicyDefaultWindow(t *testing.T) {
	p := NewDoorPolicy(testDoorConfig(), t0, DoorMemory{})
	anchor(p, t0)
	const window = 3 * time.Minute
	if w := p.Config().Window; w != window {
		t.Fatalf("default window %v, want %v", w, window)
	}
	ring := t0.Add(time.Hour)
	p.Rang(ring)
	in := ring.Add(window - time.Second)
	if d := p.Decide(in, openReq("$in", alice, in)); d.Verdict != VerdictOpen {
		t.Fatalf("inside the window: %s (%s)", d.Verdict, d.Why)
	}
	out := ring.Add(window + time.Second)
	if d := p.Decide(out, openReq("$out", alice, out)); d.Verdict != VerdictOutsideWindow {
		t.Fatalf("after the window: %s (%s)", d.Verdict, d.Why)
	}
}

// TestDoorPolicyReactionOnlyOnANoticeInsideTheWindow: a 🔑 on this
// morning's ring notice, delivered while the next visitor's ring window
// is open, is not a command for that visitor.
func TestDoorPolicyReactionOnlyOnANoticeInsideTheWindow(t *testing.T) {
	p := NewDoorPolicy(testDoorConfig(), t0, DoorMemory{})
	anchor(p, t0)
	p.Rang(t0)
	p.NoticeSent("$morning")
	later := t0.Add(5 * time.Hour)
	p.Rang(later)
	p.NoticeSent("$now")
	at := later.Add(10 * time.Second)
	react := func(id, target string) DoorRequest {
		return DoorRequest{EventID: id, Sender: alice, Reaction: true, Key: "🔑", Target: target, Timestamp: at}
	}
	if d := p.Decide(at, react("$late", "$morning")); d.Verdict != VerdictOutsideWindow {
		t.Fatalf("🔑 on this morning's notice: %s (%s), want %s", d.Verdict, d.Why, VerdictOutsideWindow)
	}
	if d := p.Decide(at, react("$fresh", "$now")); d.Verdict != VerdictOpen {
		t.Fatalf("🔑 on the current notice: %s (%s)", d.Verdict, d.Why)
	}
}

// TestDoorPolicyReactionDuringTheCallThatAnsweredTheRing: a resident still
// talking to the visitor after the window may react to that ring's
// notice; a live view hours later does not bring the morning's notice
// back, and OnlyDuringCall keeps reactions to the answering call.
func TestDoorPolicyReactionDuringTheCallThatAnsweredTheRing(t *testing.T) {
	react := func(id, target string, at time.Time) DoorRequest {
		return DoorRequest{EventID: id, Sender: alice, Reaction: true, Key: "🔑", Target: target, Timestamp: at}
	}
	for _, only := range []bool{false, true} {
		cfg := testDoorConfig()
		cfg.OnlyDuringCall = only
		p := NewDoorPolicy(cfg, t0, DoorMemory{})
		anchor(p, t0)
		p.Rang(t0)
		p.NoticeSent("$notice")
		p.CallChanged(t0.Add(20*time.Second), true) // the resident answers
		at := t0.Add(10 * time.Minute)
		if d := p.Decide(at, react("$r1", "$notice", at)); d.Verdict != VerdictOpen {
			t.Fatalf("only_during_call %v: 🔑 during the answering call: %s (%s)", only, d.Verdict, d.Why)
		}
		p.CallChanged(at, false)
		at = at.Add(time.Second)
		if d := p.Decide(at, react("$r2", "$notice", at)); d.Verdict != VerdictOutsideWindow {
			t.Fatalf("only_during_call %v: 🔑 after the call: %s (%s)", only, d.Verdict, d.Why)
		}
		live := t0.Add(5 * time.Hour)
		p.CallChanged(live, true) // a live view, no ring
		at = live.Add(time.Second)
		if d := p.Decide(at, react("$r3", "$notice", at)); d.Verdict != VerdictOutsideWindow {
			t.Fatalf("only_during_call %v: 🔑 on the morning's notice during a live view: %s (%s)", only, d.Verdict, d.Why)
		}
		if d := p.Decide(at, openReq("$o", alice, at)); d.Verdict != VerdictOpen {
			t.Fatalf("only_during_call %v: !open during a live view: %s (%s)", only, d.Verdict, d.Why)
		}
	}
}

// TestDoorPolicyOnlyDuringCallClosesTheRingWindow: with OnlyDuringCall a
// ring alone opens nothing, and the reply says so.
func TestDoorPolicyOnlyDuringCallClosesTheRingWindow(t *testing.T) {
	cfg := testDoorConfig()
	cfg.OnlyDuringCall = true
	p := NewDoorPolicy(cfg, t0, DoorMemory{})
	anchor(p, t0)
	p.Rang(t0)
	p.NoticeSent("$notice")
	at := t0.Add(time.Second)
	d := p.Decide(at, openReq("$o", alice, at))
	if d.Verdict != VerdictOutsideWindow || d.Reply != "The door opens only during a call." {
		t.Fatalf("!open after a ring, only during a call: %+v", d)
	}
	d = p.Decide(at, DoorRequest{EventID: "$r", Sender: alice, Reaction: true, Key: "🔑", Target: "$notice", Timestamp: at})
	if d.Verdict != VerdictOutsideWindow {
		t.Fatalf("🔑 after a ring, only during a call: %+v", d)
	}
	q := NewDoorPolicy(testDoorConfig(), t0, DoorMemory{})
	anchor(q, t0)
	if d := q.Decide(at, openReq("$o", alice, at)); d.Reply != "The door opens only during a call or within 3 minutes of a ring." {
		t.Fatalf("reply %q", d.Reply)
	}
}
