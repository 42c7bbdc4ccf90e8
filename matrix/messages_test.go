package matrix

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/doorbell/intercom/callengine"
)

func TestParseMessage(t *testing.T) {
	tests := []struct {
		typ, content string
		want         Message
		ok           bool
	}{
		{"m.room.message", `{"msgtype":"m.text","body":"!open"}`, Message{Kind: KindText, Body: "!open"}, true},
		{"m.room.message", `{"msgtype":"m.notice","body":"!open"}`, Message{}, false},
		{"m.room.message", `{"msgtype":"m.emote","body":"!open"}`, Message{}, false},
		{"m.room.message", `{"msgtype":"m.text","body":"* !open","m.new_content":{"msgtype":"m.text","body":"!open"},"m.relates_to":{"rel_type":"m.replace","event_id":"$x"}}`, Message{}, false},
		{"m.room.message", `{"msgtype":"m.text","body":"!open","m.relates_to":{"rel_type":"m.replace","event_id":"$x"}}`, Message{}, false},
		{"m.room.message", `{}`, Message{}, false},     // redacted
		{"m.room.message", `"text"`, Message{}, false}, // not an object
		{"m.room.message", `{"msgtype":"m.text","body":7}`, Message{}, false},
		{"m.reaction", `{"m.relates_to":{"rel_type":"m.annotation","event_id":"$n","key":"🔑"}}`, Message{Kind: KindReaction, Key: "🔑", Target: "$n"}, true},
		{"m.reaction", `{"m.relates_to":{"rel_type":"m.reference","event_id":"$n","key":"🔑"}}`, Message{}, false},
		{"m.reaction", `{"m.relates_to":{"rel_type":"m.annotation","key":"🔑"}}`, Message{}, false},
		{"m.reaction", `{}`, Message{}, false},
		{"m.call.invite", `{"msgtype":"m.text","body":"!open"}`, Message{}, false},
	}
	for _, tt := range tests {
		got, ok := ParseMessage(callengine.RoomEvent{Type: tt.typ, Content: json.RawMessage(tt.content)})
		if ok != tt.ok || got != tt.want {
			t.Errorf("%s %s: %+v %v, want %+v %v", tt.typ, tt.content, got, ok, tt.want, tt.ok)
		}
	}
}

func FuzzParseMessage(f *testing.F) {
	f.Add("m.room.message", `{"msgtype":"m.text","body":"!open"}`)
	f.Add("m.reaction", `{"m.relates_to":{"rel_type":"m.annotation","event_id":"$n","key":"🔑"}}`)
	f.Fuzz(func(t *testing.T, typ, content string) {
		m, ok := ParseMessage(callengine.RoomEvent{Type: typ, Content: json.RawMessage(content)})
		if !ok {
			return
		}
		switch m.Kind {
		case KindText:
			if typ != "m.room.message" {
				t.Fatalf("text from %s", typ)
			}
		case KindReaction:
			if typ != "m.reaction" || m.Key == "" || m.Target == "" {
				t.Fatalf("reaction %+v from %s", m, typ)
			}
		default:
			t.Fatalf("kind %v", m.Kind)
		}
	})
}

// TestRunDeliversMessagesWhenAsked: with Options.Messages, texts and
// reactions of others reach the handler with their IDs and timestamps;
// the backlog of the first sync does not, nor do the intercom's own.
func TestRunDeliversMessagesWhenAsked(t *testing.T) {
	f := newFakeHS(t)
	store := &memStore{}
	s, _ := newTestSession(t, f, store, func(o *Options) { o.Messages = true })
	if err := s.Login(t.Context()); err != nil {
		t.Fatal(err)
	}
	const room = "!dm:hs.test"
	f.scriptSync(
		okReply(syncBody("s1", map[string][]string{room: {
			callEvent("$backlog", "m.room.message", "@alice:hs.test", `{"msgtype":"m.text","body":"!open"}`),
		}}, nil)),
		okReply(syncBody("s2", map[string][]string{room: {
			callEvent("$own", "m.room.message", "@door:hs.test", `{"msgtype":"m.notice","body":"Door opened"}`),
			callEvent("$open", "m.room.message", "@alice:hs.test", `{"msgtype":"m.text","body":"!open"}`),
			callEvent("$key", "m.reaction", "@alice:hs.test", `{"m.relates_to":{"rel_type":"m.annotation","event_id":"$n","key":"🔑"}}`),
			callEvent("$topic", "m.room.topic", "@alice:hs.test", `{"topic":"x"}`),
			callEvent("$ans", "m.call.answer", "@alice:hs.test", `{}`),
		}}, nil)),
	)
	col, stop := startRun(t, s)
	waitIdle(t, f)
	stop()
	var ids []string
	for _, ev := range col.get() {
		ids = append(ids, ev.ID)
	}
	if got := strings.Join(ids, " "); got != "$open $key $ans" {
		t.Fatalf("delivered %s", got)
	}
	open := col.get()[0]
	if open.Room != room || open.Sender != "@alice:hs.test" || open.Timestamp != time.UnixMilli(1700000000123) || open.Age != 42*time.Millisecond {
		t.Errorf("delivered %+v", open)
	}
	filters := f.requests("POST filter")
	if len(filters) != 1 || !strings.Contains(filters[0].body, `"m.room.message","m.reaction"`) {
		t.Errorf("filter %v", filters)
	}
}

func TestSendTextReturnsEventID(t *testing.T) {
	f := newFakeHS(t)
	s, _ := loggedIn(t, f)
	id, err := s.SendText(t.Context(), "!dm:hs.test", "hello", false)
	if err != nil || id == "" {
		t.Fatalf("SendText: %q, %v", id, err)
	}
	sends := f.requests("PUT send")
	if len(sends) != 1 || !strings.Contains(sends[0].body, `"msgtype":"m.notice"`) {
		t.Errorf("sent %+v", sends)
	}
}

// fakeClock is a clock that sleeping advances.
type fakeClock struct {
	now    time.Time
	sleeps []time.Duration
	stopAt int
	cancel context.CancelFunc
}

func (c *fakeClock) sleep(ctx context.Context, d time.Duration) error {
	c.sleeps = append(c.sleeps, d)
	c.now = c.now.Add(d)
	if len(c.sleeps) >= c.stopAt {
		c.cancel()
	}
	return ctx.Err()
}

// TestRunTURNSchedule: credentials are refreshed ahead of their ttl,
// failures are retried with backoff, credentials that expire meanwhile
// are dropped, and a homeserver without TURN is asked every 10 minutes.
func TestRunTURNSchedule(t *testing.T) {
	f := newFakeHS(t)
	s, _ := loggedIn(t, f)
	f.script("GET voip",
		okReply(`{"username":"u1","password":"p1","ttl":100,"uris":["turn:127.0.0.1:3478?transport=udp"]}`),
		errReply(500, "M_UNKNOWN"),
		errReply(500, "M_UNKNOWN"),
		errReply(500, "M_UNKNOWN"),
		errReply(500, "M_UNKNOWN"),
		errReply(500, "M_UNKNOWN"),
		okReply(`{}`),
		okReply(`{"username":"u2","password":"p2","ttl":86400,"uris":["turns:turn.example.org:443?transport=tcp"]}`),
	)
	ctx, cancel := context.WithCancel(t.Context())
	clock := &fakeClock{now: time.Unix(1_800_000_000, 0), stopAt: 9, cancel: cancel}
	s.now = func() time.Time { return clock.now }
	s.sleep = clock.sleep
	var updates []string
	err := s.RunTURN(ctx, func(ts []TURNServer) {
		if len(ts) == 0 {
			updates = append(updates, "none")
			return
		}
		updates = append(updates, ts[0].Username+" "+ts[0].URIs[0])
		if got := s.TURNServers(); len(got) != 1 || got[0].Password != ts[0].Password {
			t.Errorf("TURNServers %+v during update %+v", got, ts)
		}
	})
	if err == nil {
		t.Fatal("RunTURN returned nil")
	}
	// Refresh at ttl - ttl/2 = 50 s; then retries after 2.5, 5, 10, 20
	// and 40 s (half of the backoff, no jitter), the last cut in two by
	// the expiry at 100 s.
	want := []time.Duration{50 * time.Second, 2500 * time.Millisecond, 5 * time.Second, 10 * time.Second, 20 * time.Second, 12500 * time.Millisecond, 27500 * time.Millisecond}
	for i, d := range want {
		if i >= len(clock.sleeps) || clock.sleeps[i] != d {
			t.Fatalf("sleeps %v, want %v…", clock.sleeps, want)
		}
	}
	wantUpdates := "u1 turn:127.0.0.1:3478?transport=udp|none|u2 turns:turn.example.org:443?transport=tcp"
	if got := strings.Join(updates, "|"); got != wantUpdates {
		t.Errorf("updates %s, want %s", got, wantUpdates)
	}
	if got := clock.sleeps[len(clock.sleeps)-2]; got != turnCheckInterval {
		t.Errorf("after {} slept %v, want %v", got, turnCheckInterval)
	}
	if got := clock.sleeps[len(clock.sleeps)-1]; got != 86400*time.Second-turnCheckInterval {
		t.Errorf("refresh of a day-long credential after %v", got)
	}
}
