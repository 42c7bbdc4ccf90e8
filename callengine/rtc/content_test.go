package rtc

import (
	"encoding/json"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/doorbell/intercom/callengine"
)

// Every ring mentions its residents and the room: the user mention pushes
// where the server has .m.rule.is_user_mention, the room mention where the
// intercom holds notifications.room (its own DMs) and on clients that
// evaluate is_room_mention themselves (Dendrite has neither rule).
func TestNewRingMentions(t *testing.T) {
	for _, tt := range []Target{
		{Room: roomA, Residents: []callengine.UserID{alice.User}},
		{Room: roomH, Residents: []callengine.UserID{alice.User, bob.User}, Group: true},
	} {
		n := NewRing(tt, "$member", t0, 30*time.Second)
		if !n.Mentions.Room || len(n.Mentions.UserIDs) != len(tt.Residents) {
			t.Errorf("%s: mentions %+v, want the room and %v", tt.Room, n.Mentions, tt.Residents)
		}
		for _, u := range tt.Residents {
			if !slices.Contains(n.Mentions.UserIDs, string(u)) {
				t.Errorf("%s: %s not mentioned", tt.Room, u)
			}
		}
		b, _ := json.Marshal(n)
		var raw struct {
			Mentions struct {
				Room bool `json:"room"`
			} `json:"m.mentions"`
			Slot string `json:"slot_id"`
		}
		if json.Unmarshal(b, &raw) != nil || !raw.Mentions.Room || raw.Slot != Slot || n.RelatesTo == nil || n.RelatesTo.EventID != "$member" {
			t.Errorf("%s: ring %s", tt.Room, b)
		}
	}
}

func TestRoomNotifyPower(t *testing.T) {
	const me = callengine.UserID("@door:example.org")
	for _, tt := range []struct {
		name, content string
		have, need    int64
		bad           bool
	}{
		{"creator of a DM", `{"users":{"@door:example.org":100,"@alice:example.org":100},"users_default":0}`, 100, 50, false},
		{"invited into a room", `{"users":{"@alice:example.org":100}}`, 0, 50, false},
		{"users_default", `{"users_default":50}`, 50, 50, false},
		{"own level beats the default", `{"users_default":50,"users":{"@door:example.org":0}}`, 0, 50, false},
		{"room level raised", `{"users":{"@door:example.org":50},"notifications":{"room":75}}`, 50, 75, false},
		{"string levels (room versions before 10)", `{"users":{"@door:example.org":" 60"},"notifications":{"room":"40"}}`, 60, 40, false},
		{"null notifications", `{"notifications":null}`, 0, 50, false},
		{"empty", `{}`, 0, 50, false},
		{"float", `{"users_default":1.5}`, 0, 0, true},
		{"word", `{"notifications":{"room":"high"}}`, 0, 0, true},
		{"users not an object", `{"users":[]}`, 0, 0, true},
		{"not JSON", `{`, 0, 0, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			have, need, err := RoomNotifyPower([]byte(tt.content), me)
			if tt.bad {
				if !errors.Is(err, ErrMalformed) {
					t.Fatalf("err %v, want ErrMalformed", err)
				}
				return
			}
			if err != nil || have != tt.have || need != tt.need {
				t.Fatalf("RoomNotifyPower = %d, %d, %v; want %d, %d", have, need, err, tt.have, tt.need)
			}
		})
	}
}

// FuzzRoomNotifyPower: power levels come from the homeserver and, in a
// household room somebody else made, from whoever holds power there.
// The decoder must never panic, and its errors are ErrMalformed.
func FuzzRoomNotifyPower(f *testing.F) {
	for _, s := range []string{
		`{"users":{"@door:example.org":100},"users_default":0,"notifications":{"room":50}}`,
		`{"users":{"@door:example.org":"100"},"notifications":{"room":" 7"}}`,
		`{"users_default":-9223372036854775808}`, `{"users_default":"9223372036854775808"}`,
		`{"notifications":{"room":null}}`, `[]`, `null`, `""`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, content []byte) {
		if _, _, err := RoomNotifyPower(content, "@door:example.org"); err != nil && !errors.Is(err, ErrMalformed) {
			t.Fatalf("error %v is not ErrMalformed", err)
		}
	})
}
