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
