package matrix

import (
	"context"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/doorbell/intercom/callengine"
)

// Issue 19, finding 3: the door judges origin_server_ts against the
// homeserver's clock, learnt from the Date header of each /sync response
// (RFC 9110 §6.6.1), never against the board's, which may be years off.

// TestRunServerTime: while the handler runs for an event, ServerTime is
// the clock of the response that carried it: its Date (a lower bound), at
// the local time the response arrived.
func TestRunServerTime(t *testing.T) {
	f := newFakeHS(t)
	s, _ := loggedIn(t, f)
	s.store.SaveNextBatch("s0")
	local := time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC) // the board's clock, years behind
	s.now = func() time.Time { return local }
	date := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	rep := okReply(syncBody("s1", map[string][]string{"!dm:hs.test": {
		callEvent("$ev", "m.call.invite", "@alice:hs.test", `{"call_id":"c1"}`),
	}}, nil))
	rep.header = http.Header{"Date": {date.Format(http.TimeFormat)}}
	f.scriptSync(rep)

	var mu sync.Mutex
	var server, at time.Time
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	defer func() { cancel(); <-done }()
	go func() {
		defer close(done)
		_ = s.Run(ctx, func(ev callengine.RoomEvent) {
			if ev.ID != "$ev" {
				return
			}
			mu.Lock()
			server, at = s.ServerTime()
			mu.Unlock()
		})
	}()
	waitIdle(t, f)
	mu.Lock()
	defer mu.Unlock()
	if !server.Equal(date) || !at.Equal(local) {
		t.Fatalf("ServerTime in the handler: %v at %v, want %v at %v", server, at, date, local)
	}
}

// TestRoomEventNegativeAge: a negative unsigned.age reaches the door as
// negative (suspicious), not as a missing one.
func TestRoomEventNegativeAge(t *testing.T) {
	for _, tt := range []struct {
		unsigned string
		want     time.Duration
	}{
		{`{"age":-5000}`, -5 * time.Second},
		{`{"age":42}`, 42 * time.Millisecond},
		{`{}`, 0},
		{`{"age":-1e300}`, 0},
		{`{"age":"soon"}`, 0},
	} {
		e := syncEvent{ID: "$e", Type: "m.room.message", Unsigned: []byte(tt.unsigned)}
		if got := e.roomEvent("!r:hs.test").Age; got != tt.want {
			t.Errorf("unsigned %s: age %v, want %v", tt.unsigned, got, tt.want)
		}
	}
}

// TestServerTimeIsALowerBound: the homeserver's clock from a real Date
// header is never ahead of the true time at arrival (the same clock here),
// so a command sent just after the intercom started is never dated
// before its start; and it is behind by about a second at most.
func TestServerTimeIsALowerBound(t *testing.T) {
	f := newFakeHS(t)
	s, _ := loggedIn(t, f)
	s.store.SaveNextBatch("s0")
	_, stop := startRun(t, s)
	waitIdle(t, f)
	waitIdle(t, f) // the first idle /sync has been answered
	stop()
	server, at := s.ServerTime()
	if server.IsZero() || server.After(at) || at.Sub(server) > 2*time.Second {
		t.Fatalf("ServerTime %v at %v: want at most, and within a second or so of, the arrival", server, at)
	}
}
