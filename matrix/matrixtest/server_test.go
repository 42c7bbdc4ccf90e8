package matrixtest_test

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/doorbell/intercom/matrix/matrixtest"
)

// client is a bare HTTP client of the fake, so the fake is checked
// against the client-server API rather than against mautrix.
type client struct {
	t     *testing.T
	base  string
	token string
}

func (c *client) do(method, path, body string) (int, string) {
	c.t.Helper()
	req, err := http.NewRequestWithContext(c.t.Context(), method, c.base+path, strings.NewReader(body))
	if err != nil {
		c.t.Fatal(err)
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		c.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func (c *client) ok(method, path, body string, out any) {
	c.t.Helper()
	code, got := c.do(method, path, body)
	if code != http.StatusOK {
		c.t.Fatalf("%s %s: %d %s", method, path, code, got)
	}
	if out != nil {
		if err := json.Unmarshal([]byte(got), out); err != nil {
			c.t.Fatalf("%s %s: %v: %s", method, path, err, got)
		}
	}
}

func TestServer(t *testing.T) {
	s := matrixtest.NewServer(t, matrixtest.Options{})
	c := &client{t: t, base: s.URL + "/_matrix/client/v3"}
	if code, _ := c.do("GET", "/account/whoami", ""); code != http.StatusUnauthorized {
		t.Fatalf("whoami without a token: %d", code)
	}
	if code, _ := c.do("POST", "/login", `{"type":"m.login.password","identifier":{"type":"m.id.user","user":"@door:hs.test"},"password":"wrong"}`); code != http.StatusForbidden {
		t.Fatalf("wrong password: %d", code)
	}
	var login struct {
		AccessToken string `json:"access_token"`
		DeviceID    string `json:"device_id"`
	}
	c.ok("POST", "/login", `{"type":"m.login.password","identifier":{"type":"m.id.user","user":"door"},"password":"correct horse","device_id":"D1"}`, &login)
	c.token = login.AccessToken
	if login.DeviceID != "D1" {
		t.Errorf("device %q", login.DeviceID)
	}

	// A room as createRoom makes it: name, alias, invites, power levels.
	var created struct {
		RoomID string `json:"room_id"`
	}
	c.ok("POST", "/createRoom", `{"name":"Front door","room_alias_name":"home","invite":["@alice:hs.test"],"power_level_content_override":{"events":{"x":0}}}`, &created)
	room := created.RoomID
	if r, ok := s.Alias("#home:hs.test"); !ok || r != room {
		t.Errorf("alias -> %q %v", r, ok)
	}
	var name struct{ Name string }
	c.ok("GET", "/rooms/"+room+"/state/m.room.name/", "", &name)
	if name.Name != "Front door" || s.Membership(room, "@alice:hs.test") != "invite" || s.Membership(room, "@door:hs.test") != "join" {
		t.Errorf("name %q, alice %q, door %q", name.Name, s.Membership(room, "@alice:hs.test"), s.Membership(room, "@door:hs.test"))
	}
	if pl, _ := s.StateOf(room, "m.room.power_levels", ""); !strings.Contains(string(pl), `"events":{"x":0}`) || !strings.Contains(string(pl), `"state_default":50`) {
		t.Errorf("power levels %s", pl)
	}
	var joined struct {
		Rooms []string `json:"joined_rooms"`
	}
	c.ok("GET", "/joined_rooms", "", &joined)
	if len(joined.Rooms) != 1 || joined.Rooms[0] != room {
		t.Errorf("joined %v", joined.Rooms)
	}

	// Sends are recorded, state changes the model.
	c.ok("PUT", "/rooms/"+room+"/send/m.call.invite/t1", `{"call_id":"c1"}`, nil)
	c.ok("PUT", "/rooms/"+room+"/state/m.call.member/k", `{"a":1}`, nil)
	if e := s.WaitSent(t, "m.call.invite", nil); e.Room != room || string(e.Content) != `{"call_id":"c1"}` || e.Sender != "@door:hs.test" {
		t.Errorf("sent %+v", e)
	}
	if st, ok := s.StateOf(room, "m.call.member", "k"); !ok || string(st) != `{"a":1}` {
		t.Errorf("state %s %v", st, ok)
	}
	var all []json.RawMessage
	c.ok("GET", "/rooms/"+room+"/state", "", &all)
	if len(all) < 5 {
		t.Errorf("%d state events", len(all))
	}

	// What a test delivers comes in the next /sync, once.
	s.Deliver(matrixtest.Message(room, "@alice:hs.test", "m.call.hangup", `{"call_id":"c1"}`))
	s.Invite("!other:hs.test", "@alice:hs.test")
	s.DeliverToDevice("@alice:hs.test", "m.call.invite", map[string]string{"x": "y"})
	var resp struct {
		NextBatch string `json:"next_batch"`
		Rooms     struct {
			Join map[string]struct {
				Timeline struct{ Events []json.RawMessage }
			}
			Invite map[string]struct {
				InviteState struct{ Events []json.RawMessage } `json:"invite_state"`
			}
		}
		ToDevice struct{ Events []json.RawMessage } `json:"to_device"`
	}
	c.ok("GET", "/sync?since=s0&timeout=30000", "", &resp)
	if len(resp.Rooms.Join[room].Timeline.Events) != 1 || len(resp.Rooms.Invite["!other:hs.test"].InviteState.Events) != 1 || len(resp.ToDevice.Events) != 1 {
		t.Fatalf("sync %+v", resp)
	}
	if !strings.Contains(string(resp.Rooms.Join[room].Timeline.Events[0]), `"sender":"@alice:hs.test"`) {
		t.Errorf("timeline %s", resp.Rooms.Join[room].Timeline.Events[0])
	}
	next := resp.NextBatch
	resp.Rooms.Join = nil
	c.ok("GET", "/sync?since="+next+"&timeout=30000", "", &resp)
	if resp.NextBatch != next || len(resp.Rooms.Join) != 0 {
		t.Errorf("idle sync %+v", resp)
	}
	select {
	case <-s.SyncIdle():
	default:
		t.Error("idle sync not signalled")
	}
	c.ok("POST", "/join/!other:hs.test", "", nil)
	if s.Membership("!other:hs.test", "@door:hs.test") != "join" {
		t.Error("join did not join")
	}

	// Scripted replies come first, then the model again.
	s.Script("GET whoami", matrixtest.Error(502, ""))
	if code, _ := c.do("GET", "/account/whoami", ""); code != 502 {
		t.Errorf("scripted whoami: %d", code)
	}
	var who struct {
		UserID   string `json:"user_id"`
		DeviceID string `json:"device_id"`
	}
	c.ok("GET", "/account/whoami", "", &who)
	if who.UserID != "@door:hs.test" || who.DeviceID != "D1" {
		t.Errorf("whoami %+v", who)
	}
	if n := len(s.Requests("GET whoami")); n != 3 {
		t.Errorf("%d whoami requests recorded", n)
	}
	s.RevokeTokens()
	if code, _ := c.do("GET", "/account/whoami", ""); code != http.StatusUnauthorized {
		t.Errorf("revoked token: %d", code)
	}
}
