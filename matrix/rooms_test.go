package matrix

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/doorbell/intercom/callengine"
)

func TestEnsureDirectRooms(t *testing.T) {
	f := newFakeHS(t)
	store := &memStore{}
	s, _ := newTestSession(t, f, store, func(o *Options) {
		o.Residents = []callengine.UserID{"@alice:hs.test", "@bob:hs.test", "@carol:hs.test"}
	})
	if err := s.Login(t.Context()); err != nil {
		t.Fatal(err)
	}
	// alice: the stored room is still fine.
	f.SetMembership("!alice:hs.test", "@door:hs.test", "join")
	f.SetMembership("!alice:hs.test", "@alice:hs.test", "join")
	// bob: the stored room was left by bob; m.direct names a good one.
	f.SetMembership("!bobold:hs.test", "@door:hs.test", "join")
	f.SetMembership("!bobold:hs.test", "@bob:hs.test", "leave")
	f.SetMembership("!bobdirect:hs.test", "@door:hs.test", "join")
	f.SetMembership("!bobdirect:hs.test", "@bob:hs.test", "invite")
	// carol: her m.direct room has a third member, another is not joined.
	f.SetMembership("!crowded:hs.test", "@door:hs.test", "join")
	f.SetMembership("!crowded:hs.test", "@carol:hs.test", "join")
	f.SetMembership("!crowded:hs.test", "@mallory:hs.test", "join")
	f.SetAccountData("m.direct", `{"@bob:hs.test":["!bobdirect:hs.test"],"@carol:hs.test":["!notjoined:hs.test","!crowded:hs.test"],"@other:hs.test":["!keep:hs.test"],"@weird:hs.test":{"x":1}}`)
	store.SaveDirectRoom("@alice:hs.test", "!alice:hs.test")
	store.SaveDirectRoom("@bob:hs.test", "!bobold:hs.test")

	rooms, err := s.EnsureDirectRooms(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if rooms["@alice:hs.test"] != "!alice:hs.test" || rooms["@bob:hs.test"] != "!bobdirect:hs.test" {
		t.Errorf("rooms = %v", rooms)
	}
	carol := rooms["@carol:hs.test"]
	if !strings.HasPrefix(string(carol), "!r") {
		t.Fatalf("carol's room %q was not created", carol)
	}
	creates := f.requests("POST createRoom")
	if len(creates) != 1 {
		t.Fatalf("%d rooms created, want 1", len(creates))
	}
	var req map[string]any
	json.Unmarshal([]byte(creates[0].body), &req)
	if req["is_direct"] != true || req["preset"] != "private_chat" || req["name"] != "Front door" {
		t.Errorf("createRoom = %s", creates[0].body)
	}
	if inv, _ := req["invite"].([]any); len(inv) != 1 || inv[0] != "@carol:hs.test" {
		t.Errorf("invite = %v", req["invite"])
	}
	for user, room := range rooms {
		if got, _, _ := store.DirectRoom(string(user)); got != string(room) {
			t.Errorf("store has %s for %s, want %s", got, user, room)
		}
	}
	var direct map[string]json.RawMessage
	md, _ := f.AccountData("m.direct")
	json.Unmarshal(md, &direct)
	if string(direct["@carol:hs.test"]) != `["!notjoined:hs.test","!crowded:hs.test","`+string(carol)+`"]` ||
		string(direct["@other:hs.test"]) != `["!keep:hs.test"]` || string(direct["@weird:hs.test"]) != `{"x":1}` {
		t.Errorf("m.direct = %s", direct)
	}

	// Idempotent.
	again, err := s.EnsureDirectRooms(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	for u, r := range rooms {
		if again[u] != r {
			t.Errorf("second run: %s -> %s, first %s", u, again[u], r)
		}
	}
	if n := len(f.requests("POST createRoom")); n != 1 {
		t.Errorf("second run created rooms (%d total)", n)
	}
}

func TestEnsureDirectRoomsWithoutMDirect(t *testing.T) {
	f := newFakeHS(t)
	s, _ := loggedIn(t, f)
	f.script("POST createRoom", errReply(429, "M_LIMIT_EXCEEDED"))
	rooms, err := s.EnsureDirectRooms(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if len(rooms) != 1 || len(f.requests("POST createRoom")) != 2 {
		t.Fatalf("rooms %v after %d creates", rooms, len(f.requests("POST createRoom")))
	}
	if md, _ := f.AccountData("m.direct"); string(md) != `{"@alice:hs.test":["`+string(rooms["@alice:hs.test"])+`"]}` {
		t.Errorf("m.direct = %s, want alice's room %s only", md, rooms["@alice:hs.test"])
	}
}

func TestEnsureDirectRoomsDoesNotRetryAmbiguousCreate(t *testing.T) {
	f := newFakeHS(t)
	s, _ := loggedIn(t, f)
	f.script("POST createRoom", errReply(502, ""))
	if _, err := s.EnsureDirectRooms(t.Context()); err == nil {
		t.Fatal("no error")
	}
	if n := len(f.requests("POST createRoom")); n != 1 {
		t.Errorf("%d createRoom attempts after a 502, want 1", n)
	}
}
