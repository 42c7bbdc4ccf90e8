package householdpeer

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/doorbell/intercom/internal/testenv/dendrite"
)

// TestCryptoPeers: two devices with crypto in one room of a real Dendrite
// call each other (alice's "user:device" sorts first, so she calls bob).
// In an encrypted room every call event goes Olm-encrypted both ways; in a
// room without m.room.encryption the same devices signal in the clear, as
// dart-sdk does. Either way the call connects.
func TestCryptoPeers(t *testing.T) {
	if testing.Short() {
		t.Skip("needs Dendrite")
	}
	hs := dendrite.StartT(t)
	for _, tc := range []struct {
		name      string
		encrypted bool
	}{
		{"encrypted room", true},
		{"room in the clear", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
			defer cancel()
			var users []dendrite.User
			for _, n := range []string{"alice", "bob"} {
				u, err := hs.Register(ctx, fmt.Sprintf("%s%d", n, time.Now().UnixNano()), n+"-password")
				if err != nil {
					t.Fatal(err)
				}
				users = append(users, u)
			}
			alice, bob := users[0], users[1]
			room := createRoom(ctx, t, hs, alice, bob, tc.encrypted)
			start := func(u dendrite.User) *Device {
				d, err := Start(ctx, Options{Homeserver: hs.BaseURL, UserID: u.UserID, AccessToken: u.AccessToken,
					DeviceID: u.DeviceID, Room: room, Crypto: true, CryptoDir: t.TempDir(),
					Logf: func(f string, a ...any) { t.Logf(u.UserID+": "+f, a...) }})
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(d.Close)
				return d
			}
			// alice first: bob reads her membership from the room
			// state when he starts, so that her invite, which may
			// reach him before a sync shows her membership, finds it.
			da := start(alice)
			db := start(bob)
			for da.Connected() == 0 || db.Connected() == 0 {
				select {
				case <-ctx.Done():
					t.Fatalf("no connection: alice %d, bob %d connected", da.Connected(), db.Connected())
				case <-time.After(20 * time.Millisecond):
				}
			}
			for name, d := range map[string]*Device{"alice": da, "bob": db} {
				n := d.Signalling("")
				t.Logf("%s: %v", name, n)
				if tc.encrypted && (n.ReceivedEncrypted == 0 || n.ReceivedClear != 0 || n.SentEncrypted == 0 || n.SentClear != 0) {
					t.Errorf("%s in an encrypted room: %v", name, n)
				}
				if !tc.encrypted && (n.ReceivedEncrypted != 0 || n.ReceivedClear == 0 || n.SentEncrypted != 0 || n.SentClear == 0) {
					t.Errorf("%s in a room in the clear: %v", name, n)
				}
				if d.Undecryptable() != 0 {
					t.Errorf("%s: %d undecryptable events", name, d.Undecryptable())
				}
			}
		})
	}
}

// createRoom makes a private room of owner with invited joined to it
// later by Start, where both may publish call memberships; encrypted
// gives it m.room.encryption from the start.
func createRoom(ctx context.Context, t *testing.T, hs *dendrite.Server, owner, invited dendrite.User, encrypted bool) string {
	t.Helper()
	req := map[string]any{
		"preset": "private_chat", "invite": []string{invited.UserID},
		"power_level_content_override": map[string]any{"events": map[string]int{"com.famedly.call.member": 0}},
	}
	if encrypted {
		req["initial_state"] = []any{map[string]any{"type": "m.room.encryption", "state_key": "",
			"content": map[string]any{"algorithm": "m.megolm.v1.aes-sha2"}}}
	}
	b, _ := json.Marshal(req)
	r, _ := http.NewRequestWithContext(ctx, http.MethodPost, hs.BaseURL+"/_matrix/client/v3/createRoom", bytes.NewReader(b))
	r.Header.Set("Authorization", "Bearer "+owner.AccessToken)
	resp, err := http.DefaultClient.Do(r)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var created struct {
		RoomID string `json:"room_id"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&created); err != nil || created.RoomID == "" {
		t.Fatalf("createRoom: HTTP %d, %v", resp.StatusCode, err)
	}
	return created.RoomID
}
