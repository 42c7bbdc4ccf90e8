package matrix

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/doorbell/intercom/callengine"
)

// hookLog records what household hooks received, tagged by which hooks.
type hookLog struct {
	mu  sync.Mutex
	got []string
}

func (l *hookLog) hooks(tag string, room string) *HouseholdHooks {
	add := func(s string) {
		l.mu.Lock()
		defer l.mu.Unlock()
		l.got = append(l.got, tag+" "+s)
	}
	return &HouseholdHooks{
		Room:       callengine.RoomID(room),
		StateTypes: []string{"com.famedly.call.member"},
		State:      func(e StateEvent) { add("state " + e.ID + " " + string(e.Room)) },
		ToDevice:   func(e ToDeviceEvent) { add("to-device " + e.Type + " " + string(e.Sender)) },
	}
}

func (l *hookLog) has(want string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Contains(l.got, want)
}

func (l *hookLog) get() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.got)
}

// householdSyncBody is a /sync answer with one state event in room's
// state section, one in its timeline and one to-device event.
func householdSyncBody(next, room, state, timeline, toDevice string) string {
	member := func(id string) string {
		return fmt.Sprintf(`{"event_id":%q,"type":"com.famedly.call.member","state_key":"@alice:hs.test","sender":"@alice:hs.test","origin_server_ts":1700000000000,"content":{"memberships":[]}}`, id)
	}
	return fmt.Sprintf(`{"next_batch":%q,"to_device":{"events":[{"sender":"@alice:hs.test","type":%q,"content":{}}]},`+
		`"rooms":{"join":{%q:{"state":{"events":[%s]},"timeline":{"events":[%s,{"event_id":"$msg","type":"m.room.message","sender":"@alice:hs.test","content":{}}]}}}}}`,
		next, toDevice, room, member(state), member(timeline))
}

// TestHouseholdHooks: the hooks belong to their session, ask the filter
// for their types, get state from the first sync on and to-device events
// after it, and can be replaced while Run runs (under -race: without a
// data race, also when the caller changes its struct afterwards).
func TestHouseholdHooks(t *testing.T) {
	const room = "!home:hs.test"
	f := newFakeHS(t)
	s, _ := loggedIn(t, f)
	other, _ := loggedIn(t, newFakeHS(t))
	var log, otherLog hookLog
	a := log.hooks("A", room)
	s.SetHouseholdHooks(a)
	other.SetHouseholdHooks(otherLog.hooks("other", room))
	a.Room, a.StateTypes[0] = "!elsewhere:hs.test", "x" // registered as a copy

	f.scriptSync(
		okReply(householdSyncBody("s1", room, "$s1", "$t1", "initial.to_device")),
		okReply(householdSyncBody("s2", room, "$s2", "$t2", "live.to_device")),
	)
	startRunNoIdle(t, s, func() bool { return log.has("A to-device live.to_device @alice:hs.test") })

	filters := f.requests("POST filter")
	if len(filters) != 1 {
		t.Fatalf("%d filters created", len(filters))
	}
	for _, want := range []string{
		`"state":{"types":["m.room.member","com.famedly.call.member"]`,
		`"m.call.*","org.matrix.call.*","m.room.member","com.famedly.call.member"]`,
	} {
		if !strings.Contains(filters[0].body, want) {
			t.Errorf("filter %s lacks %s", filters[0].body, want)
		}
	}

	// Replaced while running: the next response goes to B only.
	var logB hookLog
	s.SetHouseholdHooks(logB.hooks("B", room))
	f.scriptSync(okReply(householdSyncBody("s3", room, "$s3", "$t3", "b.to_device")))
	eventually(t, "B's to-device event", 10*time.Second, func() bool { return logB.has("B to-device b.to_device @alice:hs.test") })

	want := []string{
		"A state $s1 " + room, "A state $t1 " + room, // the first sync is current state, not backlog
		"A state $s2 " + room, "A state $t2 " + room, "A to-device live.to_device @alice:hs.test",
	}
	if got := log.get(); !slices.Equal(got, want) {
		t.Errorf("hooks A got\n%q, want\n%q", got, want)
	}
	if got := logB.get(); !slices.Equal(got, []string{"B state $s3 " + room, "B state $t3 " + room, "B to-device b.to_device @alice:hs.test"}) {
		t.Errorf("hooks B got %q", got)
	}
	if got := otherLog.get(); len(got) != 0 {
		t.Errorf("another session's hooks got %q", got)
	}

	// Removed: nothing more is delivered.
	s.SetHouseholdHooks(nil)
	f.scriptSync(okReply(householdSyncBody("s4", room, "$s4", "$t4", "none.to_device")))
	eventually(t, "the sync after removal", 10*time.Second, func() bool {
		return s.store.(*memStore).get().nextBatch == "s4"
	})
	if got := logB.get(); len(got) != 3 {
		t.Errorf("removed hooks got %q", got)
	}
}

func TestDeviceMismatch(t *testing.T) {
	for _, tt := range []struct {
		ev   ToDeviceEvent
		want bool // refused
	}{
		{ToDeviceEvent{Device: "PHONE", Content: json.RawMessage(`{"device_id":"PHONE","party_id":"PHONE"}`)}, false},
		{ToDeviceEvent{Device: "PHONE", Content: json.RawMessage(`{"call_id":"c"}`)}, false},
		{ToDeviceEvent{Device: "", Content: json.RawMessage(`{"device_id":"PHONE"}`)}, true},
		{ToDeviceEvent{Device: "PHONE", Content: json.RawMessage(`{"device_id":"TABLET"}`)}, true},
		{ToDeviceEvent{Device: "PHONE", Content: json.RawMessage(`{"party_id":"TABLET"}`)}, true},
		{ToDeviceEvent{Device: "PHONE", Content: json.RawMessage(`[`)}, true},
	} {
		if got := deviceMismatch(tt.ev) != ""; got != tt.want {
			t.Errorf("%+v (%s): refused %v, want %v", tt.ev, tt.ev.Content, got, tt.want)
		}
	}
}
