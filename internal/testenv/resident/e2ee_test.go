package resident_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"testing"
	"time"

	"github.com/doorbell/intercom/internal/testenv/dendrite"
	"github.com/doorbell/intercom/internal/testenv/resident"
)

// TestEncryptedRoom proves the residents' end-to-end encryption on a real
// Dendrite: alice (cross-signed) creates an encrypted direct room with bob
// (encryption, not cross-signed), and text, a reaction, an encrypted image
// and a call go through it encrypted on the wire. A second device of alice
// without CrossSign stays unsigned and cannot read what came before it.
func TestEncryptedRoom(t *testing.T) {
	if testing.Short() {
		t.Skip("needs Dendrite, node and Chromium")
	}
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()

	hs := dendrite.StartT(t)
	aliceUser, err := hs.Register(ctx, "alice", "alice-password")
	if err != nil {
		t.Fatal(err)
	}
	bobUser, err := hs.Register(ctx, "bob", "bob-password")
	if err != nil {
		t.Fatal(err)
	}

	// Password logins: each page is a new device with its own Olm keys.
	started := time.Now()
	rs := startAll(ctx, t,
		resident.Options{Homeserver: hs.BaseURL, UserID: aliceUser.UserID, Password: aliceUser.Password, Encryption: true, CrossSign: true, Log: prefixed(t, "alice")},
		resident.Options{Homeserver: hs.BaseURL, UserID: bobUser.UserID, Password: bobUser.Password, Encryption: true, AutoJoin: true, Log: prefixed(t, "bob")},
	)
	alice, bob := rs[0], rs[1]
	t.Logf("both ready after %v; alice %v, bob %v", time.Since(started), alice.Ready().Fields["cryptoTimings"], bob.Ready().Fields["cryptoTimings"])
	if !alice.CrossSigned() || bob.CrossSigned() {
		t.Fatalf("crossSigned: alice %v, bob %v; want true, false", alice.CrossSigned(), bob.CrossSigned())
	}
	if alice.Ready().Str("masterKey") == "" || bob.Ready().Str("masterKey") != "" {
		t.Errorf("master keys: alice %q, bob %q; want one and none", alice.Ready().Str("masterKey"), bob.Ready().Str("masterKey"))
	}

	room, err := alice.CreateRoom(ctx, resident.CreateRoomOptions{Invite: []string{bobUser.UserID}, Encrypted: true, Direct: true})
	if err != nil {
		t.Fatal(err)
	}
	if ev := waitFor(ctx, t, bob, resident.EventJoined); ev.Str("roomId") != room {
		t.Fatalf("bob joined %s, want %s", ev.Str("roomId"), room)
	}

	// Text: encrypted on the wire, decrypted by bob.
	textID, err := alice.SendText(ctx, room, "hello, encrypted")
	if err != nil {
		t.Fatal(err)
	}
	msg := waitFor(ctx, t, bob, resident.EventMessage)
	if msg.Str("eventId") != textID || msg.Str("body") != "hello, encrypted" || msg.Fields["encrypted"] != true || msg.Str("sender") != aliceUser.UserID {
		t.Fatalf("bob got %s, want %s from alice, encrypted, body %q", msg, textID, "hello, encrypted")
	}
	t.Logf("bob decrypted alice's text %v after its origin_server_ts; shield %s %s",
		msg.TS.Sub(time.UnixMilli(int64(msg.Num("serverTs")))), msg.Str("shieldColour"), msg.Str("shieldReason"))
	wireType(ctx, t, hs.BaseURL, aliceUser.AccessToken, room, textID, "m.room.encrypted")

	// Reactions: js-sdk (Element Web) leaves them in the clear on purpose;
	// ReactEncrypted encrypts one as other clients do.
	reactionID, err := bob.React(ctx, room, textID, "👍")
	if err != nil {
		t.Fatal(err)
	}
	wireType(ctx, t, hs.BaseURL, bobUser.AccessToken, room, reactionID, "m.reaction")
	if ev := waitFor(ctx, t, alice, resident.EventReaction); ev.Str("eventId") != reactionID || ev.Str("key") != "👍" || ev.Fields["encrypted"] != false {
		t.Errorf("alice got %s, want the plain reaction %s", ev, reactionID)
	}
	reactionID, err = bob.ReactEncrypted(ctx, room, textID, "🔑")
	if err != nil {
		t.Fatal(err)
	}
	wireType(ctx, t, hs.BaseURL, bobUser.AccessToken, room, reactionID, "m.room.encrypted")
	if ev := waitFor(ctx, t, alice, resident.EventReaction); ev.Str("eventId") != reactionID || ev.Str("key") != "🔑" || ev.Str("relatesTo") != textID || ev.Fields["encrypted"] != true {
		t.Errorf("alice got %s, want the encrypted reaction %s to %s", ev, reactionID, textID)
	}

	// An encrypted JPEG: bob downloads it through authenticated media,
	// decrypts and decodes it.
	sent, err := alice.SendImage(ctx, room, resident.SendImageOptions{Width: 80, Height: 60, Mimetype: "image/jpeg"})
	if err != nil {
		t.Fatal(err)
	}
	if !sent.Encrypted {
		t.Errorf("alice sent the image unencrypted into an encrypted room: %+v", sent)
	}
	img := waitFor(ctx, t, bob, resident.EventMessage)
	if img.Str("eventId") != sent.EventID || img.Str("msgtype") != "m.image" || img.Fields["file"] == nil || img.Str("url") != "" || img.Fields["encrypted"] != true {
		t.Fatalf("bob got %s, want the encrypted m.image %s with a file and no url", img, sent.EventID)
	}
	got, err := bob.DownloadImage(ctx, img)
	if err != nil {
		t.Fatal(err)
	}
	if got.Width != 80 || got.Height != 60 || !got.Encrypted || got.SHA256 != sent.SHA256 || got.Bytes != sent.Bytes || got.Mimetype != "image/jpeg" {
		t.Errorf("bob's image: %+v, want 80x60 image/jpeg, encrypted, %d bytes with SHA-256 %s", got, sent.Bytes, sent.SHA256)
	}
	if !got.Authenticated {
		t.Errorf("bob's image came through unauthenticated media: %+v", got)
	}
	wireType(ctx, t, hs.BaseURL, aliceUser.AccessToken, room, sent.EventID, "m.room.encrypted")

	// A call in the encrypted room: bob's js-sdk rings once the invite is
	// decrypted.
	if err := alice.PlaceCall(room); err != nil {
		t.Fatal(err)
	}
	placing := waitFor(ctx, t, alice, resident.EventPlacing)
	incoming := waitFor(ctx, t, bob, resident.EventIncoming)
	if incoming.CallID() != placing.CallID() || incoming.Str("roomId") != room {
		t.Fatalf("bob rings for %s, want call %s in %s", incoming, placing.CallID(), room)
	}
	t.Logf("encrypted invite (origin_server_ts) -> bob rings %v", incoming.TS.Sub(time.UnixMilli(int64(incoming.Num("inviteTs")))))
	if err := bob.Answer(); err != nil {
		t.Fatal(err)
	}
	for _, r := range []*resident.Resident{alice, bob} {
		if ev := waitFor(ctx, t, r, resident.EventConnected); ev.CallID() != placing.CallID() {
			t.Fatalf("%s: connected %s, want call %s", r.UserID(), ev, placing.CallID())
		}
	}
	if err := alice.Hangup(); err != nil {
		t.Fatal(err)
	}
	if ev := waitFor(ctx, t, bob, resident.EventHangup); ev.CallID() != placing.CallID() || ev.Str("party") != "remote" {
		t.Errorf("bob: %s, want the remote party to end call %s", ev, placing.CallID())
	}

	// A second device of alice, without CrossSign: unsigned, and the
	// encrypted history from before it existed is undecryptable to it.
	alice2 := resident.StartT(t, resident.Options{Homeserver: hs.BaseURL, UserID: aliceUser.UserID, Password: aliceUser.Password, Encryption: true, Log: prefixed(t, "alice2")})
	if alice2.CrossSigned() {
		t.Error("alice's second device says it is cross-signed")
	}
	if ev := waitFor(ctx, t, alice2, resident.EventUndecryptable); ev.Str("roomId") != room || ev.Str("reason") == "" {
		t.Errorf("alice2: %s, want an undecryptable event in %s with a reason", ev, room)
	} else {
		t.Logf("alice2 cannot decrypt %s: %s", ev.Str("eventId"), ev.Str("reason"))
	}

	// What the homeserver says (Matrix spec: POST /keys/query): alice's
	// first device carries a signature by her self-signing key, her second
	// does not, and bob has no cross-signing keys at all.
	signed := selfSigned(ctx, t, hs.BaseURL, bobUser.AccessToken, aliceUser.UserID, bobUser.UserID)
	for _, c := range []struct {
		who, user, device string
		want              bool
	}{
		{"alice", aliceUser.UserID, alice.DeviceID(), true},
		{"alice2", aliceUser.UserID, alice2.DeviceID(), false},
		{"bob", bobUser.UserID, bob.DeviceID(), false},
	} {
		got, ok := signed[c.user][c.device]
		if !ok {
			t.Errorf("%s: /keys/query does not list device %s", c.who, c.device)
		} else if got != c.want {
			t.Errorf("%s: device %s signed by the self-signing key: %v, want %v", c.who, c.device, got, c.want)
		}
	}
}

// TestPlainImage checks SendImage and DownloadImage without encryption: the
// m.image names its file by url.
func TestPlainImage(t *testing.T) {
	if testing.Short() {
		t.Skip("needs Dendrite, node and Chromium")
	}
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	hs := dendrite.StartT(t)
	erin, err := hs.Register(ctx, "erin", "erin-password")
	if err != nil {
		t.Fatal(err)
	}
	frank, err := hs.Register(ctx, "frank", "frank-password")
	if err != nil {
		t.Fatal(err)
	}
	rs := startAll(ctx, t,
		resident.Options{Homeserver: hs.BaseURL, UserID: erin.UserID, Password: erin.Password, Log: prefixed(t, "erin")},
		resident.Options{Homeserver: hs.BaseURL, UserID: frank.UserID, Password: frank.Password, AutoJoin: true, Log: prefixed(t, "frank")},
	)
	sender, receiver := rs[0], rs[1]
	room, err := sender.CreateRoom(ctx, resident.CreateRoomOptions{Invite: []string{frank.UserID}})
	if err != nil {
		t.Fatal(err)
	}
	waitFor(ctx, t, receiver, resident.EventJoined)
	sent, err := sender.SendImage(ctx, room, resident.SendImageOptions{})
	if err != nil {
		t.Fatal(err)
	}
	msg := waitFor(ctx, t, receiver, resident.EventMessage)
	if msg.Str("eventId") != sent.EventID || msg.Str("url") == "" || msg.Fields["file"] != nil || msg.Fields["encrypted"] != false || sent.Encrypted {
		t.Fatalf("frank got %s for %+v, want a plain m.image with a url", msg, sent)
	}
	got, err := receiver.DownloadImage(ctx, msg)
	if err != nil {
		t.Fatal(err)
	}
	if got.Width != 64 || got.Height != 48 || got.Encrypted || got.SHA256 != sent.SHA256 || got.Mimetype != "image/png" {
		t.Errorf("frank's image: %+v, want the 64x48 image/png %s", got, sent.SHA256)
	}
	wireType(ctx, t, hs.BaseURL, erin.AccessToken, room, sent.EventID, "m.room.message")
}

// wireType checks the type an event has on the homeserver (GET
// /rooms/{roomId}/event/{eventId}): m.room.encrypted when it was encrypted.
//
// Dendrite answers a send before the event is readable (its roomserver
// applies it asynchronously, and under load that shows as a 404 for a
// moment), so a 404 is asked again for a few seconds.
func wireType(ctx context.Context, t *testing.T, base, token, roomID, eventID, want string) {
	t.Helper()
	var ev struct {
		Type string `json:"type"`
	}
	path := "/_matrix/client/v3/rooms/" + url.PathEscape(roomID) + "/event/" + url.PathEscape(eventID)
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+path, nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Authorization", "Bearer "+token)
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		status := res.StatusCode
		if status == http.StatusOK {
			err = json.NewDecoder(res.Body).Decode(&ev)
		}
		res.Body.Close()
		if status == http.StatusOK && err == nil {
			break
		}
		if status != http.StatusNotFound || time.Now().After(deadline) {
			t.Fatalf("GET %s: HTTP %d: %v", path, status, err)
		}
	}
	if ev.Type != want {
		t.Errorf("event %s is a %q on the homeserver, want %q", eventID, ev.Type, want)
	}
}

// selfSigned asks /keys/query which devices of users carry a signature by
// their user's self-signing key: user -> device -> signed.
func selfSigned(ctx context.Context, t *testing.T, base, token string, users ...string) map[string]map[string]bool {
	t.Helper()
	query := map[string][]string{}
	for _, u := range users {
		query[u] = []string{}
	}
	var res struct {
		DeviceKeys      map[string]map[string]struct{ Signatures map[string]map[string]string } `json:"device_keys"`
		SelfSigningKeys map[string]struct{ Keys map[string]string }                             `json:"self_signing_keys"`
	}
	clientAPI(ctx, t, base, token, "/keys/query", map[string]any{"device_keys": query}, &res)
	out := map[string]map[string]bool{}
	for user, devices := range res.DeviceKeys {
		out[user] = map[string]bool{}
		for device, keys := range devices {
			for keyID := range res.SelfSigningKeys[user].Keys {
				if _, ok := keys.Signatures[user][keyID]; ok {
					out[user][device] = true
				}
			}
			if !out[user][device] {
				out[user][device] = false
			}
		}
	}
	return out
}

// clientGet calls GET /_matrix/client/v3<path> and decodes the answer.
func clientGet(ctx context.Context, t *testing.T, base, token, path string, out any) {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/_matrix/client/v3"+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	if err := json.NewDecoder(res.Body).Decode(out); err != nil || res.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s: %v", path, res.Status, err)
	}
}
