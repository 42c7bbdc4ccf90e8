package rtc

import (
	"encoding/json"
	"errors"
	"reflect"
	"testing"
	"time"

	"github.com/doorbell/intercom/callengine"
	"github.com/doorbell/intercom/callengine/group"
)

var (
	t0    = time.UnixMilli(1_790_000_000_000)
	self  = Device{User: "@door:example.org", DeviceID: "DOOR"}
	alice = Device{User: "@alice:example.org", DeviceID: "ALICEPHONE"}
	bob   = Device{User: "@bob:example.org", DeviceID: "BOBPHONE"}
	roomA = callengine.RoomID("!a:example.org")
	roomB = callengine.RoomID("!b:example.org")
)

func newMachine() *Machine {
	return New(DefaultConfig(self, "https://rtc.example.org/livekit/jwt"))
}

func targets() []Target {
	return []Target{
		{Room: roomA, Residents: []callengine.UserID{alice.User}},
		{Room: roomB, Residents: []callengine.UserID{bob.User}},
	}
}

// joinEvent is d's membership as Element Call sends it.
func joinEvent(d Device, at time.Time) group.MemberEvent {
	c := map[string]any{"application": "m.call", "call_id": "", "scope": "m.room", "device_id": d.DeviceID,
		"focus_active": map[string]any{"type": "livekit", "focus_selection": "multi_sfu"}, "expires": 14_400_000}
	b, _ := json.Marshal(c)
	return group.MemberEvent{Type: TypeMember, StateKey: StateKey(d), Sender: d.User, Content: b, Timestamp: at, EventID: "$join-" + d.DeviceID}
}

func leaveEvent(d Device, at time.Time) group.MemberEvent {
	return group.MemberEvent{Type: TypeMember, StateKey: StateKey(d), Sender: d.User, Content: []byte(`{}`), Timestamp: at, EventID: "$leave-" + d.DeviceID}
}

func find[T Effect](effs []Effect) []T {
	var out []T
	for _, e := range effs {
		if v, ok := e.(T); ok {
			out = append(out, v)
		}
	}
	return out
}

// ringAndNotify rings both rooms and completes the membership and
// notification sends.
func ringAndNotify(t *testing.T, m *Machine) {
	t.Helper()
	effs := m.Step(t0, RingRequested{Targets: targets()})
	if got := len(find[PublishMembership](effs)); got != 2 {
		t.Fatalf("memberships published = %d, want 2: %v", got, effs)
	}
	if got := len(find[JoinSFU](effs)); got != 2 {
		t.Fatalf("SFU joins = %d, want 2", got)
	}
	if m.Phase() != PhaseRinging {
		t.Fatalf("phase %s, want ringing", m.Phase())
	}
	for _, r := range []callengine.RoomID{roomA, roomB} {
		effs := m.Step(t0.Add(20*time.Millisecond), MembershipSent{Room: r, EventID: "$member-" + string(r)})
		n := find[SendNotification](effs)
		if len(n) != 1 {
			t.Fatalf("room %s: no notification after membership: %v", r, effs)
		}
		if n[0].Content.RelatesTo == nil || n[0].Content.RelatesTo.EventID != "$member-"+string(r) {
			t.Fatalf("notification does not reference the membership: %+v", n[0].Content)
		}
		m.Step(t0.Add(30*time.Millisecond), NotificationSent{Room: r, EventID: "$ring-" + string(r)})
	}
}

func TestMembershipShape(t *testing.T) {
	m := NewMembership(self, roomA, "https://rtc.example.org/livekit/jwt", 5*time.Minute, time.Time{})
	b, _ := json.Marshal(m)
	var got map[string]any
	_ = json.Unmarshal(b, &got)
	for k, want := range map[string]any{"application": "m.call", "call_id": "", "scope": "m.room", "device_id": "DOOR",
		"expires": 300000.0, "membershipID": "@door:example.org:DOOR"} {
		if !reflect.DeepEqual(got[k], want) {
			t.Errorf("%s = %v, want %v", k, got[k], want)
		}
	}
	if _, ok := got["created_ts"]; ok {
		t.Error("first membership carries created_ts; js-sdk omits it on the first join")
	}
	foci := got["foci_preferred"].([]any)[0].(map[string]any)
	if foci["livekit_alias"] != string(roomA) || foci["type"] != "livekit" {
		t.Errorf("foci_preferred = %v", foci)
	}
	if StateKey(self) != "_@door:example.org_DOOR_m.call" {
		t.Errorf("state key %q", StateKey(self))
	}
	// The decoder the household call uses must accept ours.
	if _, left, err := DecodeMember(group.MemberEvent{Type: TypeMember, StateKey: StateKey(self), Sender: self.User, Content: b}); err != nil || left {
		t.Errorf("own membership does not decode: left=%v err=%v", left, err)
	}
}

func TestLiveKitRoomName(t *testing.T) {
	// sha256(`["!a:example.org","m.call#ROOM"]`), standard alphabet, no padding.
	got := LiveKitRoomName(roomA)
	if len(got) != 43 {
		t.Fatalf("room name %q: want 43 characters of unpadded base64", got)
	}
	if LiveKitRoomName(roomB) == got {
		t.Fatal("two rooms share a LiveKit room")
	}
}

func TestFirstJoinAnswersAndOtherRoomsAreLeft(t *testing.T) {
	m := newMachine()
	ringAndNotify(t, m)
	effs := m.Step(t0.Add(2*time.Second), MemberChanged{Room: roomA, Event: joinEvent(alice, t0.Add(2*time.Second))})
	if a := find[Answered](effs); len(a) != 1 || a[0].Room != roomA || a[0].By != alice {
		t.Fatalf("answered = %v", a)
	}
	if c := find[ClearMembership](effs); len(c) != 1 || c[0].Room != roomB {
		t.Fatalf("cleared = %v, want room B only", c)
	}
	if l := find[LeaveSFU](effs); len(l) != 1 || l[0].Room != roomB {
		t.Fatalf("left SFU = %v, want room B only", l)
	}
	if m.Phase() != PhaseInCall {
		t.Fatalf("phase %s", m.Phase())
	}
	// Bob joining his call now changes nothing: room B was left.
	if effs := m.Step(t0.Add(3*time.Second), MemberChanged{Room: roomB, Event: joinEvent(bob, t0.Add(3*time.Second))}); len(find[Answered](effs)) != 0 {
		t.Fatal("second answer accepted")
	}
	// Alice reaches the SFU: the presence timer stops.
	effs = m.Step(t0.Add(3*time.Second), ParticipantChanged{Room: roomA, Identity: alice.Identity(), Present: true})
	if s := find[StopTimer](effs); len(s) != 1 || s[0].ID.Kind != TimerPresence {
		t.Fatalf("presence timer not stopped: %v", effs)
	}
	// Her leaving the call ends it.
	effs = m.Step(t0.Add(time.Minute), MemberChanged{Room: roomA, Event: leaveEvent(alice, t0.Add(time.Minute))})
	if e := find[Ended](effs); len(e) != 1 || e[0].Reason != ReasonResidentLeft {
		t.Fatalf("ended = %v", effs)
	}
	if len(find[ClearMembership](effs)) != 1 || m.Phase() != PhaseIdle {
		t.Fatalf("not left: %v, phase %s", effs, m.Phase())
	}
}

func TestCrashedResidentEndsCallThroughSFUPresence(t *testing.T) {
	m := newMachine()
	ringAndNotify(t, m)
	m.Step(t0.Add(time.Second), MemberChanged{Room: roomA, Event: joinEvent(alice, t0.Add(time.Second))})
	m.Step(t0.Add(2*time.Second), ParticipantChanged{Room: roomA, Identity: alice.Identity(), Present: true})
	// Her app dies: no membership change (no delayed events), but LiveKit
	// sees her go.
	effs := m.Step(t0.Add(time.Minute), ParticipantChanged{Room: roomA, Identity: alice.Identity(), Present: false})
	st := find[StartTimer](effs)
	if len(st) != 1 || st[0].ID.Kind != TimerPresence {
		t.Fatalf("no presence timer: %v", effs)
	}
	effs = m.Step(t0.Add(time.Minute+st[0].After), TimerFired{ID: st[0].ID})
	if e := find[Ended](effs); len(e) != 1 || e[0].Reason != ReasonResidentLeft {
		t.Fatalf("call not ended: %v", effs)
	}
}

func TestAnswererWhoNeverReachesSFU(t *testing.T) {
	m := newMachine()
	ringAndNotify(t, m)
	effs := m.Step(t0.Add(time.Second), MemberChanged{Room: roomA, Event: joinEvent(alice, t0.Add(time.Second))})
	st := find[StartTimer](effs)
	if len(st) != 1 || st[0].ID.Kind != TimerPresence {
		t.Fatalf("no presence timer after answer: %v", effs)
	}
	effs = m.Step(t0.Add(time.Second+st[0].After), TimerFired{ID: st[0].ID})
	if len(find[Ended](effs)) != 1 {
		t.Fatalf("call kept without the resident at the SFU: %v", effs)
	}
}

func TestDecline(t *testing.T) {
	m := newMachine()
	ringAndNotify(t, m)
	bad := []DeclineReceived{
		{Room: roomA, Sender: alice.User, Content: []byte(`{"m.relates_to":{"rel_type":"m.reference","event_id":"$other"}}`)},
		{Room: roomA, Sender: bob.User, Content: []byte(`{"m.relates_to":{"rel_type":"m.reference","event_id":"$ring-!a:example.org"}}`)},
		{Room: roomA, Sender: alice.User, Content: []byte(`{"m.relates_to":{"rel_type":"m.annotation","event_id":"$ring-!a:example.org"}}`)},
		{Room: roomA, Sender: alice.User, Content: []byte(`[`)},
	}
	for _, d := range bad {
		if effs := m.Step(t0.Add(time.Second), d); len(find[Ignored](effs)) != 1 || len(find[ClearMembership](effs)) != 0 {
			t.Errorf("decline %s from %s not ignored: %v", d.Content, d.Sender, effs)
		}
	}
	effs := m.Step(t0.Add(time.Second), DeclineReceived{Room: roomA, Sender: alice.User,
		Content: []byte(`{"m.relates_to":{"rel_type":"m.reference","event_id":"$ring-!a:example.org"}}`)})
	if c := find[ClearMembership](effs); len(c) != 1 || c[0].Room != roomA {
		t.Fatalf("room A not left on decline: %v", effs)
	}
	if m.Phase() != PhaseRinging {
		t.Fatal("bob's ring stopped by alice's decline")
	}
	effs = m.Step(t0.Add(2*time.Second), DeclineReceived{Room: roomB, Sender: bob.User,
		Content: []byte(`{"m.relates_to":{"rel_type":"m.reference","event_id":"$ring-!b:example.org"}}`)})
	if e := find[Ended](effs); len(e) != 1 || e[0].Reason != ReasonDeclined || m.Phase() != PhaseIdle {
		t.Fatalf("not idle after everyone declined: %v", effs)
	}
}

func TestRingTimeoutLeavesEverything(t *testing.T) {
	m := newMachine()
	ringAndNotify(t, m)
	effs := m.Step(t0.Add(time.Minute), TimerFired{ID: TimerID{Kind: TimerRing}})
	if len(find[ClearMembership](effs)) != 2 || len(find[LeaveSFU](effs)) != 2 {
		t.Fatalf("not everything left: %v", effs)
	}
	if e := find[Ended](effs); len(e) != 1 || e[0].Reason != ReasonNoAnswer {
		t.Fatalf("ended = %v", e)
	}
}

func TestAnsweredElsewhere(t *testing.T) {
	m := newMachine()
	ringAndNotify(t, m)
	effs := m.Step(t0.Add(time.Second), AnsweredElsewhere{})
	if len(find[ClearMembership](effs)) != 2 || m.Phase() != PhaseIdle {
		t.Fatalf("ring not stopped: %v", effs)
	}
	// A call taken here is not ended by another path's answer.
	m = newMachine()
	ringAndNotify(t, m)
	m.Step(t0.Add(time.Second), MemberChanged{Room: roomA, Event: joinEvent(alice, t0.Add(time.Second))})
	if effs := m.Step(t0.Add(2*time.Second), AnsweredElsewhere{}); len(effs) != 0 || m.Phase() != PhaseInCall {
		t.Fatalf("answered call disturbed: %v", effs)
	}
}

func TestMembershipsThatAreNotAnswers(t *testing.T) {
	m := newMachine()
	ringAndNotify(t, m)
	old := joinEvent(alice, t0.Add(-10*time.Minute))
	expired := joinEvent(alice, t0.Add(time.Second))
	expired.Content = []byte(`{"application":"m.call","call_id":"","device_id":"ALICEPHONE","focus_active":{"type":"livekit"},"expires":1000,"created_ts":` + jsonInt(t0.Add(-time.Hour).UnixMilli()) + `}`)
	stranger := joinEvent(Device{User: "@eve:example.org", DeviceID: "EVE"}, t0.Add(time.Second))
	wrongKey := joinEvent(alice, t0.Add(time.Second))
	wrongKey.StateKey = StateKey(bob)
	otherCall := joinEvent(alice, t0.Add(time.Second))
	otherCall.Content = []byte(`{"application":"m.call","call_id":"side","device_id":"ALICEPHONE","focus_active":{"type":"livekit"}}`)
	echo := joinEvent(self, t0.Add(time.Second))
	for name, ev := range map[string]group.MemberEvent{"older than the ring": old, "expired": expired, "not a resident": stranger,
		"state key of another device": wrongKey, "another call": otherCall, "own echo": echo, "old shape": {Type: TypeMember, StateKey: StateKey(alice), Sender: alice.User, Content: []byte(`{"memberships":[]}`)}} {
		if effs := m.Step(t0.Add(time.Second), MemberChanged{Room: roomA, Event: ev}); len(find[Answered](effs)) != 0 {
			t.Errorf("%s answered the ring", name)
		}
	}
	if m.Phase() != PhaseRinging {
		t.Fatalf("phase %s", m.Phase())
	}
}

func jsonInt(n int64) string { b, _ := json.Marshal(n); return string(b) }

// ownEcho is the intercom's own membership event id as sync shows it,
// stamped at (the homeserver's clock).
func ownEcho(id string, at time.Time) group.MemberEvent {
	ev := joinEvent(self, at)
	ev.EventID = id
	return ev
}

// The refresh keeps created_ts on the homeserver's clock: the board's is
// an hour fast here, and the first membership's origin_server_ts is what
// phones judged its expiry by.
func TestRefreshKeepsCreatedAndExtendsExpiry(t *testing.T) {
	const skew = time.Hour // board clock ahead of the homeserver's
	serverTS := t0.Add(-skew + 25*time.Millisecond)
	for _, tt := range []struct {
		name string
		// echoFirst: sync shows the membership before its send reports.
		echoFirst bool
	}{{"echo after the send", false}, {"echo before the send", true}} {
		t.Run(tt.name, func(t *testing.T) {
			m := newMachine()
			m.Step(t0, RingRequested{Targets: targets()})
			if tt.echoFirst {
				m.Step(t0.Add(15*time.Millisecond), MemberChanged{Room: roomA, Event: ownEcho("$member-a", serverTS)})
			}
			m.Step(t0.Add(20*time.Millisecond), MembershipSent{Room: roomA, EventID: "$member-a"})
			if !tt.echoFirst {
				m.Step(t0.Add(40*time.Millisecond), MemberChanged{Room: roomA, Event: ownEcho("$member-a", serverTS)})
			}
			m.Step(t0.Add(time.Second), MemberChanged{Room: roomA, Event: joinEvent(alice, t0.Add(time.Second))})
			at := t0.Add(4 * time.Minute)
			effs := m.Step(at, TimerFired{ID: TimerID{Kind: TimerRefresh, Room: roomA}})
			p := find[PublishMembership](effs)
			if len(p) != 1 {
				t.Fatalf("no refresh: %v", effs)
			}
			if p[0].Content.CreatedTS != serverTS.UnixMilli() {
				t.Errorf("created_ts %d, want the first membership's origin_server_ts %d (board clock: %d)",
					p[0].Content.CreatedTS, serverTS.UnixMilli(), t0.UnixMilli())
			}
			// Expiry = created_ts + expires ≈ the homeserver's now + lifetime.
			if want := (4*time.Minute + DefaultConfig(self, "").MembershipLifetime).Milliseconds(); p[0].Content.Expires != want {
				t.Errorf("expires %d, want %d", p[0].Content.Expires, want)
			}
			m.Step(at.Add(30*time.Millisecond), MembershipSent{Room: roomA, EventID: "$member-a2"})
			// The refresh's own echo does not move created_ts.
			m.Step(at.Add(50*time.Millisecond), MemberChanged{Room: roomA, Event: ownEcho("$member-a2", at.Add(-skew))})
			effs = m.Step(at.Add(4*time.Minute), TimerFired{ID: TimerID{Kind: TimerRefresh, Room: roomA}})
			if p := find[PublishMembership](effs); len(p) != 1 || p[0].Content.CreatedTS != serverTS.UnixMilli() {
				t.Errorf("second refresh %+v: want created_ts %d still", p, serverTS.UnixMilli())
			}
			// A failed refresh keeps the call: the membership has minutes left.
			if effs := m.Step(at, MembershipSent{Room: roomA, Err: errors.New("503")}); len(effs) != 0 {
				t.Errorf("failed refresh ended the call: %v", effs)
			}
		})
	}
}

// Without the first membership's origin_server_ts (sync never showed it),
// the refresh leaves created_ts out and lasts one lifetime from its own
// origin_server_ts: the board's clock is never written.
func TestRefreshWithoutEchoOmitsCreated(t *testing.T) {
	m := newMachine()
	ringAndNotify(t, m)
	// Another own membership event (not the first) tells nothing.
	m.Step(t0.Add(time.Second), MemberChanged{Room: roomA, Event: ownEcho("$other", t0)})
	effs := m.Step(t0.Add(4*time.Minute), TimerFired{ID: TimerID{Kind: TimerRefresh, Room: roomA}})
	p := find[PublishMembership](effs)
	if len(p) != 1 {
		t.Fatalf("no refresh: %v", effs)
	}
	if p[0].Content.CreatedTS != 0 || p[0].Content.Expires != DefaultConfig(self, "").MembershipLifetime.Milliseconds() {
		t.Errorf("refresh created_ts %d expires %d: want none and one lifetime", p[0].Content.CreatedTS, p[0].Content.Expires)
	}
}

func TestFailures(t *testing.T) {
	m := newMachine()
	m.Step(t0, RingRequested{Targets: targets()})
	// Room A's membership cannot be sent, room B's SFU is unreachable.
	m.Step(t0, MembershipSent{Room: roomA, Err: errors.New("403")})
	effs := m.Step(t0, SFUChanged{Room: roomB, Err: errors.New("connection refused")})
	if e := find[Ended](effs); len(e) != 1 || e[0].Reason != ReasonSFULost || m.Phase() != PhaseIdle {
		t.Fatalf("not idle after both rooms failed: %v", effs)
	}
	// Busy: a ring during a ring is ignored.
	m.Step(t0, RingRequested{Targets: targets()})
	if effs := m.Step(t0, RingRequested{Targets: targets()}); len(find[Ignored](effs)) != 1 {
		t.Fatalf("second ring not ignored: %v", effs)
	}
	if effs := m.Step(t0, HangupRequested{}); len(find[ClearMembership](effs)) != 2 {
		t.Fatalf("hangup did not leave both calls: %v", effs)
	}
}

func TestSlot(t *testing.T) {
	b, _ := json.Marshal(OpenSlot)
	if !SlotOpen(b) {
		t.Fatalf("own slot %s not open", b)
	}
	for _, c := range []string{`{}`, `{"status":"closed","application":{"type":"m.call"}}`, `{"status":"open"}`, `{"status":"open","application":{"type":"m.other"}}`, `[`} {
		if SlotOpen([]byte(c)) {
			t.Errorf("%s read as open", c)
		}
	}
	m := newMachine()
	m.Step(t0, RingRequested{Targets: targets()})
	n := find[SendNotification](m.Step(t0, MembershipSent{Room: roomA, EventID: "$m"}))
	if len(n) != 1 || n[0].Content.SlotID != Slot {
		t.Fatalf("ring without slot_id: %+v", n)
	}
}
