package matrix

import (
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"
)

// invite mimics the call engine's content: its own struct, "version" as a
// string.
type invite struct {
	CallID   string `json:"call_id"`
	PartyID  string `json:"party_id"`
	Version  string `json:"version"`
	Lifetime int    `json:"lifetime"`
}

func loggedIn(t *testing.T, f *fakeHS) (*Session, *sleeps) {
	t.Helper()
	s, sl := newTestSession(t, f, &memStore{}, nil)
	if err := s.Login(t.Context()); err != nil {
		t.Fatal(err)
	}
	return s, sl
}

func TestSendRoomEventSendsContentVerbatim(t *testing.T) {
	f := newFakeHS(t)
	s, _ := loggedIn(t, f)
	for _, content := range []any{
		invite{CallID: "c1", PartyID: "DEV", Version: "1", Lifetime: 60000},
		&invite{CallID: "c1", PartyID: "DEV", Version: "1", Lifetime: 60000},
		json.RawMessage(`{"call_id":"c1","party_id":"DEV","version":"1","lifetime":60000}`),
	} {
		if err := s.SendRoomEvent(t.Context(), "!room:hs.test", "m.call.invite", content); err != nil {
			t.Fatal(err)
		}
	}
	sends := f.requests("PUT send")
	if len(sends) != 3 {
		t.Fatalf("%d sends", len(sends))
	}
	for _, r := range sends {
		if r.body != `{"call_id":"c1","party_id":"DEV","version":"1","lifetime":60000}` {
			t.Errorf("body = %s", r.body)
		}
		if !strings.HasPrefix(r.path, "/_matrix/client/v3/rooms/!room:hs.test/send/m.call.invite/") {
			t.Errorf("path = %s", r.path)
		}
	}
	if sends[0].path == sends[1].path {
		t.Error("two sends shared a transaction ID")
	}
}

func TestSendRoomEventRetriesRateLimitWithSameTransaction(t *testing.T) {
	f := newFakeHS(t)
	s, sl := loggedIn(t, f)
	f.script("PUT send",
		reply{status: 429, body: `{"errcode":"M_LIMIT_EXCEEDED","retry_after_ms":1234}`},
		reply{status: 429, body: `{"errcode":"M_LIMIT_EXCEEDED"}`, header: http.Header{"Retry-After": {"2"}}},
		errReply(502, "M_UNKNOWN"),
	)
	if err := s.SendRoomEvent(t.Context(), "!room:hs.test", "m.call.hangup", invite{Version: "1"}); err != nil {
		t.Fatal(err)
	}
	want := []time.Duration{1234 * time.Millisecond, 2 * time.Second, 500 * time.Millisecond}
	if got := sl.get(); !equalDurations(got, want) {
		t.Errorf("waits = %v, want %v", got, want)
	}
	sends := f.requests("PUT send")
	if len(sends) != 4 {
		t.Fatalf("%d attempts, want 4", len(sends))
	}
	for _, r := range sends[1:] {
		if r.path != sends[0].path {
			t.Errorf("retry used another transaction: %s vs %s", r.path, sends[0].path)
		}
	}
}

func TestSendRoomEventGivesUp(t *testing.T) {
	tests := []struct {
		name     string
		replies  []reply
		attempts int
	}{
		{"server errors", []reply{errReply(500, "M_UNKNOWN"), errReply(500, "M_UNKNOWN"), errReply(503, ""), errReply(500, ""), errReply(500, ""), errReply(500, "")}, sendAttempts},
		{"forbidden", []reply{errReply(403, "M_FORBIDDEN")}, 1},
		{"long rate limit", []reply{{status: 429, body: `{"errcode":"M_LIMIT_EXCEEDED","retry_after_ms":60000}`}}, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFakeHS(t)
			s, _ := loggedIn(t, f)
			f.script("PUT send", tt.replies...)
			err := s.SendRoomEvent(t.Context(), "!room:hs.test", "m.call.hangup", invite{Version: "1"})
			if err == nil || !strings.Contains(err.Error(), "send m.call.hangup to !room:hs.test") {
				t.Fatalf("err = %v", err)
			}
			if n := len(f.requests("PUT send")); n != tt.attempts {
				t.Errorf("%d attempts, want %d", n, tt.attempts)
			}
		})
	}
}

func TestSendRoomEventConnectionRefused(t *testing.T) {
	f := newFakeHS(t)
	s, sl := loggedIn(t, f)
	f.srv.Close()
	err := s.SendRoomEvent(t.Context(), "!room:hs.test", "m.call.hangup", invite{Version: "1"})
	if err == nil {
		t.Fatal("no error")
	}
	want := []time.Duration{125 * time.Millisecond, 250 * time.Millisecond, 500 * time.Millisecond, time.Second}
	if got := sl.get(); !equalDurations(got, want) {
		t.Errorf("waits = %v, want %v", got, want)
	}
}

func TestSendRoomEventBeforeLogin(t *testing.T) {
	f := newFakeHS(t)
	s, _ := newTestSession(t, f, &memStore{}, nil)
	if err := s.SendRoomEvent(t.Context(), "!room:hs.test", "m.call.hangup", invite{}); !errors.Is(err, ErrNotLoggedIn) {
		t.Fatalf("err = %v", err)
	}
}

func TestSendRoomEventUnmarshallableContent(t *testing.T) {
	f := newFakeHS(t)
	s, _ := loggedIn(t, f)
	if err := s.SendRoomEvent(t.Context(), "!room:hs.test", "m.call.hangup", func() {}); err == nil {
		t.Fatal("no error")
	}
	if n := len(f.requests("PUT send")); n != 0 {
		t.Errorf("%d requests", n)
	}
}
