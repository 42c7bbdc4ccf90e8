package matrix

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/doorbell/intercom/callengine"
	"github.com/doorbell/intercom/internal/testenv/dendrite"
)

// Integration tests against a real Dendrite (internal/testenv/dendrite).
// They are skipped with -short. The resident is a plain mautrix client.

const doorPassword = "door-password-1"

// countingTransport counts requests by "METHOD /path-suffix". If lose is
// set, the response to the first request it matches is lost: the server
// handled the request, the client gets an error.
type countingTransport struct {
	mu   sync.Mutex
	n    map[string]int
	lose func(*http.Request) bool
}

// errResponseLost is what a client sees of a response countingTransport
// lost.
var errResponseLost = errors.New("test: response lost on the way back")

func (c *countingTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	c.mu.Lock()
	for _, p := range []string{"/login", "/createRoom", "/account/whoami", "/filter"} {
		if strings.HasSuffix(r.URL.Path, p) {
			if c.n == nil {
				c.n = map[string]int{}
			}
			c.n[r.Method+" "+p]++
		}
	}
	if r.Method == http.MethodPut && strings.Contains(r.URL.Path, "/sendToDevice/") {
		if c.n == nil {
			c.n = map[string]int{}
		}
		c.n["PUT /sendToDevice"]++
	}
	lose := c.lose != nil && c.lose(r)
	if lose {
		c.lose = nil
	}
	c.mu.Unlock()
	resp, err := http.DefaultTransport.RoundTrip(r)
	if lose && err == nil {
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return nil, errResponseLost
	}
	return resp, err
}

// loseNext makes the response to the next request that match accepts get
// lost.
func (c *countingTransport) loseNext(match func(*http.Request) bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.lose = match
}

func (c *countingTransport) count(k string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n[k]
}

type hsEnv struct {
	srv   *dendrite.Server
	door  dendrite.User
	alice dendrite.User
	count *countingTransport
	store *memStore
}

func startHS(t testing.TB) *hsEnv {
	t.Helper()
	srv := dendrite.StartT(t)
	ctx := t.Context()
	door, err := srv.Register(ctx, "door", doorPassword)
	if err != nil {
		t.Fatal(err)
	}
	alice, err := srv.Register(ctx, "alice", "alice-password-1")
	if err != nil {
		t.Fatal(err)
	}
	return &hsEnv{srv: srv, door: door, alice: alice, count: &countingTransport{}, store: &memStore{}}
}

// session returns a new Session on env's store, not logged in.
func (e *hsEnv) session(t testing.TB) *Session {
	t.Helper()
	return e.sessionOn(t, e.store)
}

func (e *hsEnv) sessionOn(t testing.TB, store Store) *Session {
	t.Helper()
	s, err := New(Options{
		Homeserver: e.srv.BaseURL,
		UserID:     callengine.UserID(e.door.UserID),
		Password:   doorPassword,
		DeviceName: "Front door",
		Residents:  []callengine.UserID{callengine.UserID(e.alice.UserID)},
		Store:      store,
		Logger:     slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug})),
		HTTPClient: &http.Client{Transport: e.count},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func (e *hsEnv) loggedIn(t testing.TB) *Session {
	t.Helper()
	s := e.session(t)
	if err := s.Login(t.Context()); err != nil {
		t.Fatal(err)
	}
	return s
}

func client(t testing.TB, e *hsEnv, u dendrite.User) *mautrix.Client {
	t.Helper()
	c, err := mautrix.NewClient(e.srv.BaseURL, id.UserID(u.UserID), u.AccessToken)
	if err != nil {
		t.Fatal(err)
	}
	c.DeviceID = id.DeviceID(u.DeviceID)
	return c
}

func eventually(t testing.TB, what string, timeout time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestDendriteLoginOnceThenResume(t *testing.T) {
	e := startHS(t)
	// The real state directory, opened afresh for each "boot".
	dir := t.TempDir()
	boot := func() *Session {
		t.Helper()
		s := e.sessionOn(t, openState(t, dir))
		if err := s.Login(t.Context()); err != nil {
			t.Fatal(err)
		}
		return s
	}
	first := boot()
	if e.count.count("POST /login") != 1 {
		t.Fatalf("%d logins", e.count.count("POST /login"))
	}
	dev := first.DeviceID()
	if dev == "" || first.UserID() != callengine.UserID(e.door.UserID) {
		t.Fatalf("session %s %s", first.UserID(), dev)
	}

	second := boot()
	if n := e.count.count("POST /login"); n != 1 {
		t.Errorf("resume logged in again (%d logins)", n)
	}
	if second.DeviceID() != dev {
		t.Errorf("device changed on resume: %s -> %s", dev, second.DeviceID())
	}

	// The token is revoked (an admin logged the device out): the next
	// boot logs in again with the password, asking for the same device.
	creds, _, _ := openState(t, dir).Credentials()
	c := client(t, e, dendrite.User{UserID: e.door.UserID, AccessToken: creds.AccessToken})
	if _, err := c.Logout(t.Context()); err != nil {
		t.Fatal(err)
	}
	third := boot()
	if n := e.count.count("POST /login"); n != 2 {
		t.Errorf("%d logins after revocation, want 2", n)
	}
	if third.DeviceID() != dev {
		t.Errorf("device after re-login = %s, want %s", third.DeviceID(), dev)
	}
	if creds2, _, _ := openState(t, dir).Credentials(); creds2.AccessToken == creds.AccessToken || creds2.DeviceID != dev {
		t.Errorf("stored after re-login: %+v", creds2)
	}
	// The new token works.
	if err := third.SendRoomEvent(t.Context(), "!nonexistent:localhost", "m.call.hangup", map[string]string{}); err == nil ||
		strings.Contains(err.Error(), "M_UNKNOWN_TOKEN") {
		t.Errorf("new token not in use: %v", err)
	}
}

func TestDendriteDirectRooms(t *testing.T) {
	e := startHS(t)
	s := e.loggedIn(t)
	ctx := t.Context()
	rooms, err := s.EnsureDirectRooms(ctx)
	if err != nil {
		t.Fatal(err)
	}
	room := rooms[callengine.UserID(e.alice.UserID)]
	if room == "" || len(rooms) != 1 {
		t.Fatalf("rooms = %v", rooms)
	}

	// Alice is invited, as a direct chat.
	// Dendrite's sync stream lags its writes a little.
	alice := client(t, e, e.alice)
	var inv *mautrix.SyncInvitedRoom
	eventually(t, "alice's invite", 10*time.Second, func() bool {
		resp, err := alice.SyncRequest(ctx, 0, "", "", false, "")
		if err != nil {
			t.Fatal(err)
		}
		inv = resp.Rooms.Invite[id.RoomID(room)]
		return inv != nil
	})
	direct := false
	for _, ev := range inv.State.Events {
		if ev.Type == event.StateMember && ev.GetStateKey() == e.alice.UserID {
			_ = ev.Content.ParseRaw(ev.Type)
			direct = ev.Content.AsMember().IsDirect
		}
	}
	if !direct {
		t.Error("invite is not marked is_direct")
	}

	// m.direct of the intercom lists the room.
	door := client(t, e, dendrite.User{UserID: e.door.UserID, AccessToken: e.store.get().creds.AccessToken})
	var md map[string][]string
	if err := door.GetAccountData(ctx, "m.direct", &md); err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(md[e.alice.UserID], string(room)) {
		t.Errorf("m.direct = %v", md)
	}

	// Idempotent, while invited and after joining; also from a fresh
	// store, through m.direct.
	again, err := s.EnsureDirectRooms(ctx)
	if err != nil || !reflect.DeepEqual(again, rooms) {
		t.Fatalf("second run: %v, %v", again, err)
	}
	if _, err := alice.JoinRoomByID(ctx, id.RoomID(room)); err != nil {
		t.Fatal(err)
	}
	e.store.mu.Lock()
	e.store.direct = nil
	e.store.mu.Unlock()
	again, err = s.EnsureDirectRooms(ctx)
	if err != nil || !reflect.DeepEqual(again, rooms) {
		t.Fatalf("run with empty store: %v, %v", again, err)
	}
	if n := e.count.count("POST /createRoom"); n != 1 {
		t.Errorf("%d rooms created, want 1", n)
	}

	// Alice leaves: a new room is made and m.direct keeps both.
	if _, err := alice.LeaveRoom(ctx, id.RoomID(room)); err != nil {
		t.Fatal(err)
	}
	// Dendrite applies the leave to its member list asynchronously; wait
	// until the intercom's view shows it, as a later sync would, through
	// /members as EnsureDirectRooms reads it (/joined_members can show
	// the leave before /members does).
	for deadline := time.Now().Add(10 * time.Second); ; {
		members, err := door.Members(ctx, id.RoomID(room))
		if err != nil {
			t.Fatal(err)
		}
		still := false
		for _, m := range members.Chunk {
			if m.GetStateKey() == e.alice.UserID && m.Content.AsMember().Membership == event.MembershipJoin {
				still = true
			}
		}
		if !still {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the leave never reached the member list")
		}
		time.Sleep(20 * time.Millisecond)
	}
	again, err = s.EnsureDirectRooms(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if again[callengine.UserID(e.alice.UserID)] == room {
		t.Error("kept a room the resident left")
	}
	if err := door.GetAccountData(ctx, "m.direct", &md); err != nil {
		t.Fatal(err)
	}
	if got := md[e.alice.UserID]; len(got) != 2 {
		t.Errorf("m.direct entry = %v", got)
	}
}

// runSession starts s.Run and returns a channel of delivered events.
func runSession(t testing.TB, s *Session) <-chan callengine.RoomEvent {
	t.Helper()
	ch := make(chan callengine.RoomEvent, 100)
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() {
		done <- s.Run(ctx, func(ev callengine.RoomEvent) {
			select {
			case ch <- ev:
			default:
				t.Error("event channel full")
			}
		})
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != context.Canceled {
			t.Errorf("Run returned %v", err)
		}
	})
	eventually(t, "first sync", 30*time.Second, s.Healthy)
	return ch
}

func receive(t *testing.T, ch <-chan callengine.RoomEvent, timeout time.Duration) callengine.RoomEvent {
	t.Helper()
	select {
	case ev := <-ch:
		return ev
	case <-time.After(timeout):
		t.Fatalf("no event within %v", timeout)
	}
	panic("unreachable")
}

func jsonEqual(t *testing.T, a, b []byte) bool {
	t.Helper()
	var va, vb any
	if err := json.Unmarshal(a, &va); err != nil {
		t.Fatalf("%s: %v", a, err)
	}
	if err := json.Unmarshal(b, &vb); err != nil {
		t.Fatalf("%s: %v", b, err)
	}
	return reflect.DeepEqual(va, vb)
}

func TestDendriteInvitesFromResidentsOnly(t *testing.T) {
	e := startHS(t)
	ctx := t.Context()
	eve, err := e.srv.Register(ctx, "eve", "eve-password-1")
	if err != nil {
		t.Fatal(err)
	}
	s := e.loggedIn(t)
	runSession(t, s)

	door := id.UserID(e.door.UserID)
	fromEve, err := client(t, e, eve).CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "private_chat", Invite: []id.UserID{door}, IsDirect: true})
	if err != nil {
		t.Fatal(err)
	}
	fromAlice, err := client(t, e, e.alice).CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "private_chat", Invite: []id.UserID{door}, IsDirect: true})
	if err != nil {
		t.Fatal(err)
	}
	doorCli := client(t, e, dendrite.User{UserID: e.door.UserID, AccessToken: e.store.get().creds.AccessToken})
	var joined []id.RoomID
	eventually(t, "joining alice's room", 30*time.Second, func() bool {
		r, err := doorCli.JoinedRooms(ctx)
		if err == nil {
			joined = r.JoinedRooms
		}
		return slices.Contains(joined, fromAlice.RoomID)
	})
	if slices.Contains(joined, fromEve.RoomID) {
		t.Error("joined a room on a non-resident's invite")
	}
	var m event.MemberEventContent
	if err := client(t, e, eve).StateEvent(ctx, fromEve.RoomID, event.StateMember, string(door), &m); err != nil {
		t.Fatal(err)
	}
	if m.Membership != event.MembershipInvite {
		t.Errorf("intercom's membership in eve's room = %s, want invite (left alone)", m.Membership)
	}
}

// directRoomWithAlice makes the direct room and has alice join it.
func directRoomWithAlice(t testing.TB, e *hsEnv, s *Session) id.RoomID {
	t.Helper()
	rooms, err := s.EnsureDirectRooms(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	room := id.RoomID(rooms[callengine.UserID(e.alice.UserID)])
	if _, err := client(t, e, e.alice).JoinRoomByID(t.Context(), room); err != nil {
		t.Fatal(err)
	}
	return room
}

func TestDendriteCallEventsBothWays(t *testing.T) {
	e := startHS(t)
	ctx := t.Context()
	s := e.loggedIn(t)
	room := directRoomWithAlice(t, e, s)
	alice := client(t, e, e.alice)

	// Backlog from before the intercom's first sync is not delivered.
	// Dendrite's send returns before its sync stream has the event: wait
	// until alice's own sync shows it, so that it is really backlog.
	backlog, err := alice.SendMessageEvent(ctx, room, event.Type{Type: "m.call.invite", Class: event.MessageEventType},
		json.RawMessage(`{"call_id":"backlog","version":"1"}`))
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, "backlog in the sync stream", 10*time.Second, func() bool {
		resp, err := alice.SyncRequest(ctx, 0, "", "", false, "")
		if err != nil {
			t.Fatal(err)
		}
		for _, ev := range resp.Rooms.Join[room].Timeline.Events {
			if ev.ID == backlog.EventID {
				return true
			}
		}
		return false
	})
	ch := runSession(t, s)

	// Content as js-sdk might send it, with a numeric version and fields
	// mautrix's structs lack, plus a malformed one.
	contents := []string{
		`{"call_id":"1724312345678aBcD","party_id":"ALICEDEV","version":1,"answer":{"type":"answer","sdp":"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\n"},"capabilities":{"m.call.transferee":false,"m.call.dtmf":false},"sdp_stream_metadata":{"s1":{"purpose":"m.usermedia"}},"x.unknown":[1,-2,"ü",null,{"deep":true}]}`,
		`{"call_id":7,"candidates":"not a list","version":["x"]}`,
	}
	types := []string{"m.call.answer", "m.call.candidates"}
	for i, c := range contents {
		if _, err := alice.SendMessageEvent(ctx, room, event.Type{Type: types[i], Class: event.MessageEventType}, json.RawMessage(c)); err != nil {
			t.Fatal(err)
		}
	}
	// The intercom's own events and other types are not delivered.
	if err := s.SendRoomEvent(ctx, callengine.RoomID(room), "m.call.hangup", map[string]string{"call_id": "own", "version": "1"}); err != nil {
		t.Fatal(err)
	}
	if _, err := alice.SendText(ctx, room, "hello"); err != nil {
		t.Fatal(err)
	}
	for i, c := range contents {
		ev := receive(t, ch, 30*time.Second)
		if ev.Type != types[i] || ev.Room != callengine.RoomID(room) || ev.Sender != callengine.UserID(e.alice.UserID) ||
			!strings.HasPrefix(ev.ID, "$") || ev.Timestamp.IsZero() || time.Since(ev.Timestamp) > time.Minute {
			t.Errorf("event %d = %+v", i, ev)
		}
		if !jsonEqual(t, ev.Content, []byte(c)) {
			t.Errorf("content %d changed:\n got %s\nsent %s", i, ev.Content, c)
		}
	}
	select {
	case ev := <-ch:
		t.Errorf("unexpected event %s %s %s", ev.Type, ev.Sender, ev.Content)
	case <-time.After(500 * time.Millisecond):
	}

	// What the intercom sends keeps "version" a string.
	type inviteContent struct {
		CallID   string `json:"call_id"`
		PartyID  string `json:"party_id"`
		Version  string `json:"version"`
		Lifetime int    `json:"lifetime"`
	}
	if err := s.SendRoomEvent(ctx, callengine.RoomID(room), "m.call.invite",
		&inviteContent{CallID: "door1", PartyID: s.DeviceID(), Version: "1", Lifetime: 60000}); err != nil {
		t.Fatal(err)
	}
	// Dendrite's /messages is fed asynchronously from the room server, so
	// a read right after the send may not see the event yet: read until
	// the door's invite is there.
	var got map[string]any
	for deadline := time.Now().Add(10 * time.Second); got == nil; time.Sleep(50 * time.Millisecond) {
		msgs, err := alice.Messages(ctx, room, "", "", mautrix.DirectionBackward, &mautrix.FilterPart{Types: []event.Type{{Type: "m.call.invite"}}}, 10)
		if err != nil {
			t.Fatal(err)
		}
		for _, ev := range msgs.Chunk {
			if ev.Sender == id.UserID(e.door.UserID) {
				if err := json.Unmarshal(ev.Content.VeryRaw, &got); err != nil {
					t.Fatal(err)
				}
				break
			}
		}
		if got == nil && time.Now().After(deadline) {
			t.Fatal("the door's invite never appeared in alice's /messages")
		}
	}
	if got["version"] != "1" || got["call_id"] != "door1" || got["party_id"] != s.DeviceID() {
		t.Errorf("resident reads the invite as %v", got)
	}
}

func TestDendriteSyncSurvivesRestart(t *testing.T) {
	e := startHS(t)
	ctx := t.Context()
	s := e.loggedIn(t)
	room := directRoomWithAlice(t, e, s)
	alice := client(t, e, e.alice)
	ch := runSession(t, s)
	send := func(callID string) {
		t.Helper()
		if _, err := alice.SendMessageEvent(ctx, room, event.Type{Type: "m.call.hangup", Class: event.MessageEventType},
			map[string]string{"call_id": callID, "version": "1"}); err != nil {
			t.Fatal(err)
		}
	}
	send("before")
	if ev := receive(t, ch, 30*time.Second); !strings.Contains(string(ev.Content), "before") {
		t.Fatalf("got %s", ev.Content)
	}

	// The sync loop is in a long-poll when the homeserver goes away.
	time.Sleep(200 * time.Millisecond)
	t0 := time.Now()
	if err := e.srv.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	t.Logf("restart took %v", time.Since(t0))
	send("after")
	ev := receive(t, ch, 60*time.Second)
	if !strings.Contains(string(ev.Content), "after") {
		t.Fatalf("got %s", ev.Content)
	}
	t.Logf("event after restart arrived %v after the restart began", time.Since(t0))
	eventually(t, "healthy", 10*time.Second, s.Healthy)

	// A longer outage: the loop backs off, reports it, and comes back.
	if err := e.srv.Stop(); err != nil {
		t.Fatal(err)
	}
	eventually(t, "failures to show", 30*time.Second, func() bool { return s.Status().ConsecutiveFailures >= 3 })
	st := s.Status()
	if st.LastError == "" || !strings.Contains(st.LastError, "connection refused") {
		t.Errorf("status during outage = %+v", st)
	}
	t0 = time.Now()
	if err := e.srv.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	send("after-outage")
	ev = receive(t, ch, 60*time.Second)
	if !strings.Contains(string(ev.Content), "after-outage") {
		t.Fatalf("got %s", ev.Content)
	}
	t.Logf("after %d failures, the event arrived %v after the homeserver was back", st.ConsecutiveFailures, time.Since(t0))
	// The status is updated once the sync that carried the event is done.
	eventually(t, "status to recover", 10*time.Second, func() bool {
		st := s.Status()
		return st.ConsecutiveFailures == 0 && st.LastError == "" && st.Healthy
	})
	if n := e.count.count("POST /login"); n != 1 {
		t.Errorf("%d logins: the restarts cost the session", n)
	}
}

func TestDendriteFilterReusedAcrossRuns(t *testing.T) {
	e := startHS(t)
	for run := range 2 {
		s := e.loggedIn(t)
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan error, 1)
		go func() { done <- s.Run(ctx, func(callengine.RoomEvent) {}) }()
		eventually(t, "first sync", 30*time.Second, s.Healthy)
		cancel()
		<-done
		if n := e.count.count("POST /filter"); n != 1 {
			t.Errorf("run %d: %d filters created, want 1", run, n)
		}
	}
	if e.store.get().filterID == "" || e.store.get().nextBatch == "" {
		t.Errorf("store = %+v", e.store.get())
	}
}

// TestDendriteSendOnce: a message sent "once" under a key and sent again
// under the same key by a new Session on the same stored login (a
// restart) is one event: the real homeserver answers the repeated
// transaction ID with the first event; another key makes another event.
func TestDendriteSendOnce(t *testing.T) {
	e := startHS(t)
	s := e.loggedIn(t)
	ctx := t.Context()
	rooms, err := s.EnsureDirectRooms(ctx)
	if err != nil {
		t.Fatal(err)
	}
	room := rooms[callengine.UserID(e.alice.UserID)]
	first, err := s.SendTextOnce(ctx, room, "someone rang at 14:03", true, "visitor-1|"+string(room)+"|text")
	if err != nil {
		t.Fatal(err)
	}
	restarted := e.loggedIn(t) // resumes the stored token
	again, err := restarted.SendTextOnce(ctx, room, "someone rang at 14:03", true, "visitor-1|"+string(room)+"|text")
	if err != nil {
		t.Fatal(err)
	}
	other, err := restarted.SendTextOnce(ctx, room, "someone rang at 14:05", true, "visitor-2|"+string(room)+"|text")
	if err != nil {
		t.Fatal(err)
	}
	if first == "" || again != first || other == first {
		t.Fatalf("events %q, %q (same key after a restart), %q (another key)", first, again, other)
	}
}
