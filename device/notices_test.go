package device

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/doorbell/intercom/callengine"
)

type fakeSnapshot struct{ delay time.Duration }

func (f fakeSnapshot) Snapshot(ctx context.Context) ([]byte, error) {
	time.Sleep(f.delay)
	return []byte("\xff\xd8jpeg\xff\xd9"), nil
}

func ringStatus(phase callengine.Phase, state callengine.LegState, reason string, ids ...string) callengine.Status {
	st := callengine.Status{Phase: phase, Since: t0}
	for i, id := range ids {
		st.Calls = append(st.Calls, callengine.CallStatus{
			CallID: callengine.CallID(id), Room: callengine.RoomID("!r" + string(rune('a'+i)) + ":hs.test"),
			Resident: callengine.UserID("@u" + string(rune('a'+i)) + ":hs.test"), State: state, Reason: reason,
		})
	}
	return st
}

// TestNoticesRingThenMissed runs on synctest's clock: "at once, before
// the snapshot" is then exact, not a wall-clock bound a loaded machine
// can miss.
func TestNoticesRingThenMissed(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		msg := &fakeMessenger{}
		n := NewNotices(NoticeOptions{Messenger: msg, Snapshot: fakeSnapshot{delay: 50 * time.Millisecond}, Ring: true, Missed: true,
			CommandHint: "Send !open to open.", Location: time.UTC})
		t1 := time.Now()
		n.Follow(ringStatus(callengine.PhaseRinging, callengine.LegRinging, "", "c1", "c2"))
		// The text goes out at once, before the snapshot is ready.
		waitFor(t, "ring texts", func() bool { texts, _ := msg.snapshot(); return len(texts) == 2 })
		if d := time.Since(t1); d > 40*time.Millisecond {
			t.Errorf("ring texts took %v: they waited for the snapshot", d)
		}
		n.Follow(ringStatus(callengine.PhaseRinging, callengine.LegRinging, "", "c1", "c2")) // same ring again
		n.Follow(ringStatus(callengine.PhaseIdle, callengine.LegEnded, callengine.ReasonInviteTimeout, "c1", "c2"))
		n.Follow(ringStatus(callengine.PhaseIdle, callengine.LegEnded, callengine.ReasonInviteTimeout, "c1", "c2"))
		n.Wait()
		texts, images := msg.snapshot()
		if len(texts) != 4 || len(images) != 4 {
			t.Fatalf("texts %q images %q", texts, images)
		}
		for _, s := range texts[:2] {
			if !strings.Contains(s, "|true|🔔 Someone is at the door (12:00:00). Send !open to open.") {
				t.Errorf("ring notice %q", s)
			}
		}
		for _, s := range texts[2:] {
			if !strings.Contains(s, "Missed visitor") {
				t.Errorf("missed notice %q", s)
			}
		}
	})
}

func TestNoticesNoMissedWhenAnsweredOrRejected(t *testing.T) {
	for _, tt := range []struct {
		name string
		seq  []callengine.Status
	}{
		{"answered", []callengine.Status{
			ringStatus(callengine.PhaseRinging, callengine.LegRinging, "", "c1"),
			ringStatus(callengine.PhaseInCall, callengine.LegConnected, "", "c1"),
			ringStatus(callengine.PhaseIdle, callengine.LegEnded, "user_hangup", "c1"),
		}},
		{"rejected", []callengine.Status{
			ringStatus(callengine.PhaseRinging, callengine.LegRinging, "", "c1"),
			ringStatus(callengine.PhaseIdle, callengine.LegEnded, "rejected", "c1"),
		}},
		{"never seen ringing", []callengine.Status{
			ringStatus(callengine.PhaseIdle, callengine.LegEnded, callengine.ReasonInviteTimeout, "c1"),
		}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			msg := &fakeMessenger{}
			n := NewNotices(NoticeOptions{Messenger: msg, Ring: false, Missed: true})
			for _, st := range tt.seq {
				n.Follow(st)
			}
			n.Wait()
			if texts, _ := msg.snapshot(); len(texts) != 0 {
				t.Errorf("posted %q", texts)
			}
		})
	}
}

// TestNoticesFeedTheDoor: reactions to the ring notice (text or picture)
// open the door, and a ring opens the door's window.
func TestNoticesFeedTheDoor(t *testing.T) {
	relay := newRecordingRelay(t)
	cfg := testDoorConfig()
	cfg.Window = time.Minute
	door, _ := runDoor(t, DoorOptions{Policy: cfg, Relay: relay})
	msg := &fakeMessenger{}
	n := NewNotices(NoticeOptions{Messenger: msg, Snapshot: fakeSnapshot{}, Ring: true, Door: door})
	n.Follow(ringStatus(callengine.PhaseRinging, callengine.LegRinging, "", "c1"))
	n.Wait()
	now := time.Now()
	door.Handle(DoorRequest{EventID: "$r", Sender: alice, Reaction: true, Key: "🔑", Target: "$img2", Timestamp: now, ServerNow: now}, now)
	waitFor(t, "pulse", func() bool { return relay.count() == 1 })
}

// fakeHousehold is the household group call as the notices see it.
type fakeHousehold struct {
	rooms    []callengine.RoomID
	answered bool
}

func (f *fakeHousehold) Rooms() []callengine.RoomID   { return f.rooms }
func (f *fakeHousehold) AnsweredSince(time.Time) bool { return f.answered }

// TestNoticesHouseholdRoom: the ring notice (with its snapshot) and the
// missed-visitor notice also go to the household room; a reaction to the
// household room's ring notice opens the door; a ring a household device
// took is no missed visitor.
func TestNoticesHouseholdRoom(t *testing.T) {
	const home = callengine.RoomID("!home:hs.test")
	relay := newRecordingRelay(t)
	door, _ := runDoor(t, DoorOptions{Policy: testDoorConfig(), Relay: relay})
	msg := &fakeMessenger{}
	hh := &fakeHousehold{rooms: []callengine.RoomID{home}}
	n := NewNotices(NoticeOptions{Messenger: msg, Snapshot: fakeSnapshot{}, Ring: true, Missed: true, Door: door, Household: hh})
	n.Follow(ringStatus(callengine.PhaseRinging, callengine.LegRinging, "", "c1"))
	n.Follow(ringStatus(callengine.PhaseIdle, callengine.LegEnded, callengine.ReasonInviteTimeout, "c1"))
	n.Wait()
	texts, images := msg.snapshot()
	count := func(list []string, prefix, substr string) int {
		k := 0
		for _, s := range list {
			if strings.HasPrefix(s, prefix) && strings.Contains(s, substr) {
				k++
			}
		}
		return k
	}
	for _, room := range []string{"!ra:hs.test|", string(home) + "|"} {
		if count(texts, room, "Someone is at the door") != 1 || count(texts, room, "Missed visitor") != 1 || count(images, room, "Snapshot") != 2 {
			t.Errorf("room %s: texts %q images %q", room, texts, images)
		}
	}
	// The household room's ring notice is the first text posted there.
	var target string
	msg.mu.Lock()
	for i, s := range msg.texts {
		if strings.HasPrefix(s, string(home)+"|") && strings.Contains(s, "Someone is at the door") {
			target = msg.ids[i]
		}
	}
	msg.mu.Unlock()
	now := time.Now()
	door.Handle(DoorRequest{EventID: "$hr", Room: home, Sender: alice, Reaction: true, Key: "🔑", Target: target, Timestamp: now, ServerNow: now}, now)
	waitFor(t, "pulse from the household room's notice", func() bool { return relay.count() == 1 })

	// A household device took the next ring: no missed notice.
	msg2 := &fakeMessenger{}
	hh.answered = true
	n2 := NewNotices(NoticeOptions{Messenger: msg2, Ring: false, Missed: true, Household: hh})
	n2.Follow(ringStatus(callengine.PhaseRinging, callengine.LegRinging, "", "c2"))
	n2.Follow(ringStatus(callengine.PhaseIdle, callengine.LegEnded, callengine.ReasonInviteTimeout, "c2"))
	n2.Wait()
	if texts, _ := msg2.snapshot(); len(texts) != 0 {
		t.Errorf("missed notice although a household device answered: %q", texts)
	}
}

// recordingVisitors is a VisitorLog that keeps what it is given.
type recordingVisitors struct {
	mu        sync.Mutex
	adds      []string // "rangAt|text|rooms|jpeg bytes|notBefore"
	cancelled []time.Time
	holds     []time.Duration // after rangAt
}

func (r *recordingVisitors) Add(v Visitor) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	nb := ""
	if !v.NotBefore.IsZero() {
		nb = v.NotBefore.UTC().Format("15:04:05")
	}
	r.adds = append(r.adds, fmt.Sprintf("%s|%s|%v|%d|%s", v.RangAt.UTC().Format("15:04:05"), v.Text, v.Rooms, len(v.JPEG), nb))
	return nil
}

func (r *recordingVisitors) Cancel(rangAt time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.cancelled = append(r.cancelled, rangAt)
}

func (r *recordingVisitors) Hold(rangAt, notBefore time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.holds = append(r.holds, notBefore.Sub(rangAt))
}

func (r *recordingVisitors) snapshot() ([]string, []time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.adds), slices.Clone(r.cancelled)
}

// TestNoticesUnreachedRingQueued: a ring whose invites could not be sent
// (unknown_error: the homeserver away) is not the notices' to tell of
// (the Intercom retries it while the bell rings); Unreached keeps the
// visitor, snapshot included, for every resident room as known at
// delivery and not before the bell stops; Reached withdraws it.
func TestNoticesUnreachedRingQueued(t *testing.T) {
	msg := &fakeMessenger{}
	log := &recordingVisitors{}
	n := NewNotices(NoticeOptions{Messenger: msg, Snapshot: fakeSnapshot{}, Ring: true, Missed: true, Location: time.UTC, Visitors: log})
	n.Follow(ringStatus(callengine.PhaseRinging, callengine.LegRinging, "", "c1"))
	n.Follow(ringStatus(callengine.PhaseIdle, callengine.LegEnded, callengine.ReasonUnknownError, "c1"))
	n.Wait()
	if adds, _ := log.snapshot(); len(adds) != 0 {
		t.Fatalf("an unreached ring queued %q by itself", adds)
	}
	n.Unreached(t0, t0.Add(30*time.Second))
	n.Wait()
	adds, _ := log.snapshot()
	if len(adds) != 1 || !strings.HasPrefix(adds[0], "12:00:00|Missed visitor: someone rang at 12:00:00 while the door could not reach you.|[]|") ||
		!strings.HasSuffix(adds[0], "|12:00:30") || strings.Contains(adds[0], "|0|") {
		t.Fatalf("queued %q", adds)
	}
	n.Reached(t0)
	if _, cancelled := log.snapshot(); len(cancelled) != 1 || !cancelled[0].Equal(t0) {
		t.Errorf("cancelled %v", cancelled)
	}
	texts, _ := msg.snapshot()
	for _, s := range texts {
		if strings.Contains(s, "Missed") {
			t.Errorf("missed notice posted directly: %q", s)
		}
	}
}
