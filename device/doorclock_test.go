package device

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/doorbell/intercom/callengine"
)

// Issue 19, finding 3: the board may have no RTC and boot before NTP, so
// its clock can be hours behind or years ahead. The policy judges
// origin_server_ts against the homeserver's clock (ServerTime, from the
// sync), never against the board's, and without it obeys only commands
// whose unsigned.age proves them fresh.

// anchor tells p that the homeserver's clock reads server at local time
// at (a sync response), as the door does for every request.
func anchor(p *DoorPolicy, at time.Time, server ...time.Time) {
	srv := at
	if len(server) > 0 {
		srv = server[0]
	}
	p.ServerTime(at, srv)
}

// TestDoorPolicyFutureNotBeforeForgotten: a run whose clock was three
// years ahead saved that reading; once the clock is right again, the
// homeserver's clock shows it was wrong, and commands are obeyed.
func TestDoorPolicyFutureNotBeforeForgotten(t *testing.T) {
	mem := DoorMemory{NotBefore: t0.AddDate(3, 0, 0)}
	p := NewDoorPolicy(testDoorConfig(), t0, mem)
	anchor(p, t0)
	p.CallChanged(t0, true)
	at := t0.Add(time.Second)
	if d := p.Decide(at, openReq("$a", alice, at)); d.Verdict != VerdictOpen {
		t.Fatalf("fresh command after the clock was corrected: %s (%s)", d.Verdict, d.Why)
	}
	if m := p.Memory(at); m.NotBefore.After(at.Add(time.Minute)) {
		t.Fatalf("the future reading is saved again: not_before %v", m.NotBefore)
	}
}

// TestDoorPolicyBoardClockBehind: the board boots an hour behind. A
// command from before the start in the backlog, without unsigned.age
// (Dendrite sends none), is refused until the homeserver's clock is known
// and then by it; a fresh one is obeyed once it is known.
func TestDoorPolicyBoardClockBehind(t *testing.T) {
	board := t0.Add(-time.Hour) // the board's clock at the real t0
	p := NewDoorPolicy(testDoorConfig(), board, DoorMemory{})
	p.CallChanged(board, true)
	now := board.Add(time.Second)
	backlog := t0.Add(-10 * time.Minute)
	if d := p.Decide(now, openReq("$old", alice, backlog)); d.Verdict != VerdictStale {
		t.Fatalf("backlog without age, no server time yet: %s (%s), want stale", d.Verdict, d.Why)
	}
	fresh := t0.Add(time.Second)
	if d := p.Decide(now, openReq("$early", alice, fresh)); d.Verdict != VerdictStale {
		t.Fatalf("command without age before the server time is known: %s (%s), want stale", d.Verdict, d.Why)
	}
	// With unsigned.age, no clock is needed: sent 200 ms ago, after the start.
	if d := p.Decide(now, DoorRequest{EventID: "$aged", Sender: alice, Text: "!open", Timestamp: fresh, Age: 200 * time.Millisecond}); d.Verdict != VerdictOpen {
		t.Fatalf("command with a usable age: %s (%s)", d.Verdict, d.Why)
	}
	anchor(p, now, t0.Add(time.Second))
	now = now.Add(5 * time.Second)
	if d := p.Decide(now, openReq("$old2", alice, backlog)); d.Verdict != VerdictStale {
		t.Fatalf("backlog without age, server time known: %s (%s), want stale", d.Verdict, d.Why)
	}
	if d := p.Decide(now, openReq("$new", alice, t0.Add(5*time.Second))); d.Verdict != VerdictOpen {
		t.Fatalf("fresh command without age, server time known: %s (%s)", d.Verdict, d.Why)
	}
	if d := p.Decide(now.Add(5*time.Second), DoorRequest{EventID: "$neg", Sender: alice, Text: "!open", Timestamp: t0.Add(10 * time.Second), Age: -time.Second}); d.Verdict != VerdictStale {
		t.Fatalf("negative age: %s (%s), want stale", d.Verdict, d.Why)
	}
}

// TestDoorPolicyMemoryInServerTime: a board three years ahead saves the
// homeserver's time as not_before, not its own, and the next run (clock
// right) obeys a fresh command.
func TestDoorPolicyMemoryInServerTime(t *testing.T) {
	board := t0.AddDate(3, 0, 0)
	p := NewDoorPolicy(testDoorConfig(), board, DoorMemory{})
	anchor(p, board, t0)
	mem := p.Memory(board.Add(time.Minute))
	if !mem.NotBefore.Equal(t0.Add(time.Minute)) {
		t.Fatalf("not_before %v, want the homeserver's %v", mem.NotBefore, t0.Add(time.Minute))
	}
	start := t0.Add(2 * time.Minute)
	q := NewDoorPolicy(testDoorConfig(), start, mem)
	anchor(q, start)
	q.CallChanged(start, true)
	at := start.Add(time.Second)
	if d := q.Decide(at, openReq("$a", alice, at)); d.Verdict != VerdictOpen {
		t.Fatalf("fresh command in the next run: %s (%s)", d.Verdict, d.Why)
	}
}

// TestDoorClockAheadThenCorrected: a door whose board clock is three years
// ahead still opens for a fresh command (judged by the homeserver's
// clock), saves no future not_before, and the next run with the clock
// corrected opens too.
func TestDoorClockAheadThenCorrected(t *testing.T) {
	dir := t.TempDir()
	cfg := testDoorConfig()
	cfg.Pulse = 50 * time.Millisecond
	relay := newRecordingRelay(t)
	ahead := func() time.Time { return time.Now().AddDate(3, 0, 0) }
	func() {
		door, err := NewDoor(DoorOptions{Policy: cfg, Relay: relay, StateDir: dir, Now: ahead})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { defer close(done); _ = door.Run(ctx) }()
		defer func() { cancel(); <-done }()
		door.rang()
		now := time.Now()
		door.Handle(serverReq("$a", alice, now, now), ahead())
		waitFor(t, "pulse with the board clock ahead", func() bool { return relay.count() == 1 })
	}()
	data, err := os.ReadFile(filepath.Join(dir, doorFile))
	if err != nil {
		t.Fatal(err)
	}
	var mem DoorMemory
	if err := json.Unmarshal(data, &mem); err != nil {
		t.Fatal(err)
	}
	if mem.NotBefore.After(time.Now().Add(time.Minute)) {
		t.Fatalf("door.json keeps the board's future clock: %s", data)
	}
	door, _ := runDoor(t, DoorOptions{Policy: cfg, Relay: relay, StateDir: dir})
	door.rang()
	now := time.Now()
	door.Handle(serverReq("$b", alice, now, now), now)
	waitFor(t, "pulse after the clock was corrected", func() bool { return relay.count() == 2 })
}

// TestDoorNoAgeNoServerTimeRefused: a command without unsigned.age is
// refused until a request brings the homeserver's clock.
func TestDoorNoAgeNoServerTimeRefused(t *testing.T) {
	relay := newRecordingRelay(t)
	door, _ := runDoor(t, DoorOptions{Policy: testDoorConfig(), Relay: relay})
	door.rang()
	now := time.Now()
	door.Handle(openReq("$blind", alice, now), now)
	waitFor(t, "refused", func() bool { return door.Status().Refused == 1 })
	now = time.Now()
	door.Handle(serverReq("$seen", alice, now, now), now)
	waitFor(t, "pulse", func() bool { return relay.count() == 1 })
}

// serverReq is openReq sent at ts and delivered by a sync from a
// homeserver whose clock read srv when it arrived (no unsigned.age, as
// Dendrite delivers them).
func serverReq(id string, sender callengine.UserID, ts, srv time.Time) DoorRequest {
	r := openReq(id, sender, ts)
	r.ServerNow = srv
	return r
}
