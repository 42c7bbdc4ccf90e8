package e2e

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"
)

// sendRaw sends content verbatim as a room event with the given token.
func sendRaw(ctx context.Context, t *testing.T, base, token, room, typ, content string) {
	t.Helper()
	u := fmt.Sprintf("%s/_matrix/client/v3/rooms/%s/send/%s/%d", base, url.PathEscape(room), url.PathEscape(typ), time.Now().UnixNano())
	req, err := http.NewRequestWithContext(ctx, http.MethodPut, u, bytes.NewBufferString(content))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Logf("homeserver refused %s %.60s…: HTTP %d", typ, content, resp.StatusCode)
	}
}

// TestHostileEventsIgnored: while the intercom rings, a second device of
// the resident floods the call's room with malformed and foreign call
// events. The intercom logs and ignores them, keeps ringing, and the real
// answer still connects.
func TestHostileEventsIgnored(t *testing.T) {
	e := startSystem(t, "erin")
	erin := e.residents[0]
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	e.press()
	if _, err := erin.WaitFor(ctx, "incoming"); err != nil {
		t.Fatal(err)
	}
	s := e.waitStatus(ctx, "ringing", func(s status) bool { return s.State == "ringing" && len(s.Calls) == 1 })
	room, call := s.Calls[0].Room, s.Calls[0].CallID
	other, err := e.hs.Login(ctx, "erin", "erin-password")
	if err != nil {
		t.Fatal(err)
	}
	hugeSDP := "v=0\\r\\n" + strings.Repeat("a=x-junk:0123456789\\r\\n", 2500)
	hostile := []struct{ typ, content string }{
		{"m.call.answer", `{"call_id": 5}`},
		{"m.call.answer", `{"call_id": "` + call + `", "version": {}, "answer": {"type": "answer", "sdp": "v=0"}}`},
		{"m.call.answer", `{"call_id": "` + call + `", "party_id": "X", "version": "1", "answer": {"type": "offer", "sdp": "v=0"}}`},
		{"m.call.answer", `{"call_id": "` + call + `", "party_id": "X", "version": "1", "answer": {"type": "answer", "sdp": "` + hugeSDP + `"}}`},
		{"m.call.answer", `{"call_id": "not-our-call", "party_id": "X", "version": "1", "answer": {"type": "answer", "sdp": "v=0\r\n"}}`},
		{"m.call.candidates", `{"call_id": "` + call + `", "party_id": "X", "version": "1", "candidates": [{"candidate": "candidate:1\r\na=evil"}]}`},
		{"m.call.candidates", `{"call_id": "` + call + `", "party_id": "X", "version": "1", "candidates": "nope"}`},
		{"m.call.hangup", `{"call_id": ["` + call + `"]}`},
		{"m.call.select_answer", `{"call_id": "` + call + `", "party_id": "X", "version": "1", "selected_party_id": "X"}`},
		{"m.call.negotiate", `{"call_id": "` + call + `", "party_id": "X", "version": 1, "lifetime": 10000, "description": {"type": "offer", "sdp": "v=0\r\n"}}`},
		{"m.call.invite", `{"call_id": "x", "lifetime": "forever", "offer": 7}`},
		{"m.call.replaces", `{"call_id": "` + call + `"}`},
	}
	for _, h := range hostile {
		sendRaw(ctx, t, e.hs.BaseURL, other.AccessToken, room, h.typ, h.content)
	}
	// Let the sync deliver all of it, then check nothing moved.
	time.Sleep(2 * time.Second)
	s = e.waitStatus(ctx, "still ringing", func(s status) bool { return s.State == "ringing" })
	if s.Calls[0].State != "ringing" {
		t.Fatalf("hostile events changed the call: %+v", s.Calls[0])
	}
	if !strings.Contains(e.log.String(), "ignoring call event") {
		t.Error("hostile events were not logged")
	}
	// matrix-js-sdk stops ringing when another device of the same user
	// answers (matrix-voip.md §1.5), even with a broken answer; so erin's
	// browser gave up on this call while the intercom kept it. End it and
	// ring again: the intercom must be as good as new.
	if h, err := erin.WaitFor(ctx, "hangup"); err == nil {
		t.Logf("erin's browser ended the call itself: %v", h.Fields["reason"])
	}
	resp, err := http.Post("http://"+e.api+"/api/hangup", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	e.waitStatus(ctx, "idle", func(s status) bool { return s.State == "idle" })
	e.press()
	if _, err := erin.WaitFor(ctx, "incoming"); err != nil {
		t.Fatal(err)
	}
	if err := erin.Click("#answer"); err != nil {
		t.Fatal(err)
	}
	if _, err := erin.WaitFor(ctx, "first_frame"); err != nil {
		t.Fatal(err)
	}
	e.waitStatus(ctx, "in call", func(s status) bool { return s.State == "in_call" })
	if strings.Contains(e.log.String(), "panic") {
		t.Fatal("the intercom panicked")
	}
}
