package matrix

import (
	"encoding/json"
	"strings"
	"sync"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/doorbell/intercom/callengine"
)

// TestDendriteRTC checks the MatrixRTC plumbing against a real homeserver:
// a resident may send call.member state in the direct room the intercom
// made, the hooks see it (and see it cleared), declines arrive as room
// events, and the OpenID token the JWT service needs can be had.
func TestDendriteRTC(t *testing.T) {
	e := startHS(t)
	ctx := t.Context()
	s := e.loggedIn(t)

	var mu sync.Mutex
	var states []StateEvent
	var events []callengine.RoomEvent
	s.SetRTCHooks(&RTCHooks{
		StateTypes: []string{rtcMemberType},
		State:      func(ev StateEvent) { mu.Lock(); states = append(states, ev); mu.Unlock() },
		EventTypes: []string{"org.matrix.msc4310.rtc.decline"},
		Event:      func(ev callengine.RoomEvent) { mu.Lock(); events = append(events, ev); mu.Unlock() },
	})
	room := directRoomWithAlice(t, e, s)
	runSession(t, s)
	alice := client(t, e, e.alice)

	// The room was created letting members join its call.
	key := "_" + e.alice.UserID + "_ALICEPHONE_m.call"
	member := json.RawMessage(`{"application":"m.call","call_id":"","device_id":"ALICEPHONE","focus_active":{"type":"livekit"}}`)
	if _, err := alice.SendStateEvent(ctx, room, event.Type{Type: rtcMemberType, Class: event.StateEventType}, key, member); err != nil {
		t.Fatalf("resident cannot join the room's call: %v", err)
	}
	eventually(t, "the resident's membership", 10*time.Second, func() bool {
		mu.Lock()
		defer mu.Unlock()
		for _, st := range states {
			if st.StateKey == key && st.Room == callengine.RoomID(room) && strings.Contains(string(st.Content), "ALICEPHONE") && !st.Timestamp.IsZero() {
				return true
			}
		}
		return false
	})
	if _, err := alice.SendStateEvent(ctx, room, event.Type{Type: rtcMemberType, Class: event.StateEventType}, key, json.RawMessage(`{}`)); err != nil {
		t.Fatal(err)
	}
	if _, err := alice.SendMessageEvent(ctx, room, event.Type{Type: "org.matrix.msc4310.rtc.decline", Class: event.MessageEventType},
		json.RawMessage(`{"m.relates_to":{"rel_type":"m.reference","event_id":"$ring"}}`)); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the cleared membership and the decline", 10*time.Second, func() bool {
		mu.Lock()
		defer mu.Unlock()
		cleared := false
		for _, st := range states {
			cleared = cleared || (st.StateKey == key && string(st.Content) == "{}")
		}
		return cleared && len(events) == 1 && events[0].Sender == callengine.UserID(e.alice.UserID)
	})

	// The intercom's own membership is accepted too.
	own := "_" + e.door.UserID + "_" + s.DeviceID() + "_m.call"
	if _, err := s.PutState(ctx, callengine.RoomID(room), rtcMemberType, own, map[string]any{"application": "m.call"}); err != nil {
		t.Fatal(err)
	}

	tok, err := s.OpenIDToken(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if tok.AccessToken == "" || tok.MatrixServerName == "" || tok.ExpiresIn <= 0 {
		t.Fatalf("OpenID token %+v", tok)
	}

	// A room made without the power level gets it once, then is left alone.
	old, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "private_chat", Invite: []id.UserID{id.UserID(e.door.UserID)}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.AllowCallMembership(ctx, callengine.RoomID(old.RoomID)); err == nil {
		t.Fatal("changed power levels in a room where the intercom has none")
	}
	made, err := client(t, e, e.door).CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "private_chat"})
	if err != nil {
		t.Fatal(err)
	}
	if changed, err := s.AllowCallMembership(ctx, callengine.RoomID(made.RoomID)); err != nil || !changed {
		t.Fatalf("AllowCallMembership = %v, %v; want a change", changed, err)
	}
	if changed, err := s.AllowCallMembership(ctx, callengine.RoomID(made.RoomID)); err != nil || changed {
		t.Fatalf("second AllowCallMembership = %v, %v; want none", changed, err)
	}
	if enc, err := s.RoomEncrypted(ctx, callengine.RoomID(room)); err != nil || enc {
		t.Fatalf("RoomEncrypted = %v, %v", enc, err)
	}
}
