package matrix

import (
	"slices"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/doorbell/intercom/callengine"
	"github.com/doorbell/intercom/internal/testenv/dendrite"
)

// A room invite from someone who is not a resident yet is left alone; a
// reload that makes them a resident (SetResidents) has it joined at the
// next sync, and EnsureDirectRooms then gives them a room, on the running
// session, with no second session.
func TestDendriteSetResidentsTakesUpEarlierInvite(t *testing.T) {
	if testing.Short() {
		t.Skip("needs Dendrite")
	}
	e := startHS(t)
	ctx := t.Context()
	eve, err := e.srv.Register(ctx, "eve", "eve-password-1")
	if err != nil {
		t.Fatal(err)
	}
	s := e.loggedIn(t)
	aliceRoom := directRoomWithAlice(t, e, s)
	runSession(t, s)
	eventually(t, "first sync", 10*time.Second, s.Healthy)

	door := id.UserID(e.door.UserID)
	fromEve, err := client(t, e, eve).CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "private_chat", Invite: []id.UserID{door}, IsDirect: true})
	if err != nil {
		t.Fatal(err)
	}
	doorCli := client(t, e, dendrite.User{UserID: e.door.UserID, AccessToken: e.store.get().creds.AccessToken})
	joined := func() []id.RoomID {
		r, err := doorCli.JoinedRooms(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return r.JoinedRooms
	}
	// The invite reaches the sync loop and is left alone.
	time.Sleep(500 * time.Millisecond)
	if slices.Contains(joined(), fromEve.RoomID) {
		t.Fatal("joined eve's room before she was a resident")
	}

	if err := s.SetResidents([]callengine.UserID{callengine.UserID(e.alice.UserID), callengine.UserID(eve.UserID)}); err != nil {
		t.Fatal(err)
	}
	// An event the sync filter passes ends the long poll; a live intercom
	// gets such traffic all the time, the test makes some.
	if _, err := client(t, e, e.alice).SendMessageEvent(ctx, aliceRoom, event.Type{Type: "m.call.hangup", Class: event.MessageEventType},
		map[string]string{"call_id": "poke", "version": "1", "party_id": "x"}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "joining eve's earlier invite", 40*time.Second, func() bool { return slices.Contains(joined(), fromEve.RoomID) })

	rooms, err := s.EnsureDirectRooms(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(rooms) != 2 || rooms[callengine.UserID(e.alice.UserID)] != callengine.RoomID(aliceRoom) || rooms[callengine.UserID(eve.UserID)] == "" {
		t.Fatalf("rooms after the reload %v", rooms)
	}
}
