package daemon

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/doorbell/intercom/callengine"
	"github.com/doorbell/intercom/device"
	"github.com/doorbell/intercom/gpio"
)

// routeMessenger records texts posted by the door.
type routeMessenger struct {
	mu    sync.Mutex
	texts []string // "room|text"
}

func (m *routeMessenger) SendText(_ context.Context, room callengine.RoomID, text string, _ bool) (string, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.texts = append(m.texts, fmt.Sprintf("%s|%s", room, text))
	return fmt.Sprintf("$t%d", len(m.texts)), nil
}

func (m *routeMessenger) SendJPEG(context.Context, callengine.RoomID, string, string, []byte) (string, error) {
	return "$img", nil
}

func (m *routeMessenger) snapshot() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return slices.Clone(m.texts)
}

// TestRouteDoorCommandsFromHouseholdRoom: the sync handler hands "!open"
// from the household room to the door like one from a direct room; an
// authorised sender opens (audit notice in the household room), a sender
// who is not authorised does not, a redelivered command does not open
// twice, and call events still go to the call engine.
func TestRouteDoorCommandsFromHouseholdRoom(t *testing.T) {
	const (
		home    = callengine.RoomID("!home:example.org")
		alice   = callengine.UserID("@alice:example.org")
		mallory = callengine.UserID("@mallory:example.org")
	)
	relay, err := gpio.NewRelay(gpio.SimPin("RELAY"), gpio.ActiveHigh)
	if err != nil {
		t.Fatal(err)
	}
	msg := &routeMessenger{}
	door, err := device.NewDoor(device.DoorOptions{Policy: device.DoorConfig{
		Authorized: []callengine.UserID{alice}, Pulse: 100 * time.Millisecond, ReplyUnauthorized: true,
	}, Relay: relay, Messenger: msg})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- door.Run(ctx) }()
	defer func() { cancel(); <-done }()

	// A visitor rings (through the notices, as in the daemon): commands
	// count within the ring window.
	device.NewNotices(device.NoticeOptions{Door: door}).Follow(callengine.Status{Phase: callengine.PhaseRinging,
		Calls: []callengine.CallStatus{{CallID: "c1", Room: home, State: callengine.LegRinging}}})

	var calls []string
	// The homeserver's clock as the sync saw it (matrix.Session.ServerTime):
	// right, at the time of each call.
	clock := func() (time.Time, time.Time) { now := time.Now(); return now, now }
	route := (&doorParts{door: door, serverTime: clock}).route(func(ev callengine.RoomEvent) { calls = append(calls, ev.Type) })
	text := func(id string, sender callengine.UserID, body string) callengine.RoomEvent {
		c, _ := json.Marshal(map[string]string{"msgtype": "m.text", "body": body})
		return callengine.RoomEvent{ID: id, Room: home, Sender: sender, Type: "m.room.message", Content: c, Timestamp: time.Now()}
	}
	route(text("$m1", mallory, "!open"))
	route(text("$a1", alice, "!open"))
	route(text("$a1", alice, "!open")) // the sync delivering it twice
	route(callengine.RoomEvent{ID: "$c", Room: home, Sender: alice, Type: "m.call.invite", Content: []byte(`{}`)})

	waitUntil(t, "audit notice in the household room", func() bool {
		return slices.ContainsFunc(msg.snapshot(), func(s string) bool {
			return strings.HasPrefix(s, string(home)+"|") && strings.Contains(s, "Door opened by "+string(alice))
		})
	})
	waitUntil(t, "door status", func() bool { st := door.Status(); return st.Opens == 1 && st.Refused >= 1 && !st.Energised })
	time.Sleep(200 * time.Millisecond) // room for a wrong second pulse
	if st := door.Status(); st.Opens != 1 {
		t.Errorf("opens %d, want 1 (mallory refused, the repeat ignored)", st.Opens)
	}
	if st := door.Status(); st.LastOpen == nil || st.LastOpen.Room != home || st.LastOpen.Sender != alice {
		t.Errorf("last open %+v, want alice from the household room", st.LastOpen)
	}
	for _, s := range msg.snapshot() {
		if !strings.HasPrefix(s, string(home)+"|") {
			t.Errorf("door posted outside the room the command came from: %q", s)
		}
	}
	if !slices.Equal(calls, []string{"m.call.invite"}) {
		t.Errorf("call engine got %v", calls)
	}
}

// TestRouteServerNow: the sync's reading of the homeserver's clock is
// carried forward to the moment an event is routed; with no reading the
// request carries none (and the door then needs unsigned.age).
func TestRouteServerNow(t *testing.T) {
	board := time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC) // years behind
	server := time.Date(2026, 3, 1, 12, 0, 1, 0, time.UTC)
	p := &doorParts{serverTime: func() (time.Time, time.Time) { return server, board }}
	if got := p.serverNow(board.Add(1500 * time.Millisecond)); !got.Equal(server.Add(1500 * time.Millisecond)) {
		t.Errorf("serverNow %v, want %v", got, server.Add(1500*time.Millisecond))
	}
	for _, p := range []*doorParts{{}, {serverTime: func() (time.Time, time.Time) { return time.Time{}, time.Time{} }}} {
		if got := p.serverNow(board); !got.IsZero() {
			t.Errorf("serverNow without a reading: %v", got)
		}
	}
}
