package device

import (
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"testing"
	"time"
)

// Issue 19, finding 2: any member of any joined room (a hostile federated
// server, an appservice) can send "!open" with any origin_server_ts. The
// policy must judge the sender before it remembers anything, so that a
// stranger's events neither fill the replay memory nor raise its floor,
// nor make the door rewrite door.json.

// TestDoorPolicyStrangersLeaveNoTrace: a flood of future-dated commands
// from a stranger changes nothing the policy remembers, and a resident's
// fresh command still opens.
func TestDoorPolicyStrangersLeaveNoTrace(t *testing.T) {
	p := NewDoorPolicy(testDoorConfig(), t0, DoorMemory{})
	anchor(p, t0)
	p.CallChanged(t0, true)
	now := t0.Add(time.Second)
	before := p.Memory(now)
	year := t0.AddDate(1, 0, 0)
	for i := range 2 * maxSeen {
		d := p.Decide(now, openReq(fmt.Sprintf("$m%d", i), mallory, year.Add(time.Duration(i)*time.Millisecond)))
		if d.Verdict != VerdictUnauthorized || d.Changed || d.Pulse != 0 {
			t.Fatalf("stranger's command %d: %+v, want unauthorized and nothing to save", i, d)
		}
	}
	// Redelivered, a stranger's command is still just unauthorised: it
	// was never remembered.
	if d := p.Decide(now, openReq("$m0", mallory, year)); d.Verdict != VerdictUnauthorized || d.Changed {
		t.Fatalf("stranger's command redelivered: %+v", d)
	}
	if after := p.Memory(now); !reflect.DeepEqual(before, after) {
		t.Fatalf("strangers changed the memory:\nbefore %+v\nafter  floor %v, %d seen", before, after.Floor, len(after.Seen))
	}
	at := t0.Add(2 * time.Second)
	if d := p.Decide(at, openReq("$a", alice, at)); d.Verdict != VerdictOpen {
		t.Fatalf("resident's fresh command after the flood: %s (%s)", d.Verdict, d.Why)
	}
}

// TestDoorStrangerDoesNotWriteMemory: the door saves door.json for a
// resident's command, never for a stranger's.
func TestDoorStrangerDoesNotWriteMemory(t *testing.T) {
	dir := t.TempDir()
	door, _ := runDoor(t, DoorOptions{Policy: testDoorConfig(), Relay: newRecordingRelay(t), Messenger: &fakeMessenger{}, StateDir: dir})
	door.rang()
	for i := range 20 {
		now := time.Now()
		door.Handle(openReq(fmt.Sprintf("$m%d", i), mallory, now), now)
	}
	waitFor(t, "the stranger refused", func() bool { return door.Status().Refused == 20 })
	if _, err := os.Stat(filepath.Join(dir, doorFile)); !os.IsNotExist(err) {
		t.Fatalf("door.json written for a stranger's commands (stat: %v)", err)
	}
}

// TestDoorPolicyFutureTimestampsIgnored: a timestamp more than a minute
// ahead of the homeserver's clock is believed by no rule: the command is
// refused, and however many such events an authorised sender's server
// produces, the memory keeps no time beyond the homeserver's clock, so
// the floor can never rise above the commands that follow.
func TestDoorPolicyFutureTimestampsIgnored(t *testing.T) {
	p := NewDoorPolicy(testDoorConfig(), t0, DoorMemory{})
	anchor(p, t0)
	p.CallChanged(t0, true)
	now := t0.Add(time.Second)
	year := t0.AddDate(1, 0, 0)
	if d := p.Decide(now, openReq("$future", alice, year)); d.Verdict != VerdictFuture || d.Pulse != 0 {
		t.Fatalf("command dated a year ahead: %+v, want %s", d, VerdictFuture)
	}
	// Within the minute, clocks of federated servers may disagree.
	if d := p.Decide(now, openReq("$skew", alice, now.Add(50*time.Second))); d.Verdict != VerdictOpen {
		t.Fatalf("command 50 s ahead: %s (%s)", d.Verdict, d.Why)
	}
	for i := range 2 * maxSeen {
		p.Decide(now, openReq(fmt.Sprintf("$f%d", i), alice, year.Add(time.Duration(i)*time.Millisecond)))
	}
	m := p.Memory(now)
	if m.Floor.After(now) {
		t.Fatalf("floor %v beyond the homeserver's clock %v", m.Floor, now)
	}
	for _, s := range m.Seen {
		if s.TS.After(now) {
			t.Fatalf("remembered %s at %v, beyond the homeserver's clock %v", s.ID, s.TS, now)
		}
	}
	at := now.Add(5 * time.Second)
	if d := p.Decide(at, openReq("$fresh", alice, at)); d.Verdict != VerdictOpen {
		t.Fatalf("fresh command after the future-dated flood: %s (%s)", d.Verdict, d.Why)
	}
}

// TestDoorPolicyPoisonedFloorFromAnOldFile: a door.json written before
// issue 19, whose floor a stranger pushed a year ahead, no longer locks
// the residents out once the homeserver's clock is known, and is not
// saved again.
func TestDoorPolicyPoisonedFloorFromAnOldFile(t *testing.T) {
	p := NewDoorPolicy(testDoorConfig(), t0, DoorMemory{NotBefore: t0.Add(-time.Hour), Floor: t0.AddDate(1, 0, 0)})
	anchor(p, t0)
	p.CallChanged(t0, true)
	at := t0.Add(time.Second)
	if d := p.Decide(at, openReq("$a", alice, at)); d.Verdict != VerdictOpen {
		t.Fatalf("fresh command under a poisoned floor: %s (%s)", d.Verdict, d.Why)
	}
	if m := p.Memory(at); m.Floor.After(at) {
		t.Fatalf("the poisoned floor is saved again: %v", m.Floor)
	}
}
