package device

import (
	"encoding/json"
	"maps"
	"slices"
	"testing"
	"time"
)

// TestEventFieldNames pins the field names docs/ARCHITECTURE.md documents
// for home automation ("The door in the house"): renaming one breaks
// installers' automations, so it must fail here first (and get a new
// version in Type).
func TestEventFieldNames(t *testing.T) {
	b := newBroadcaster(nil)
	ch, unsub := b.subscribe()
	defer unsub()
	at := time.Date(2026, 12, 6, 18, 0, 0, 0, time.UTC)
	for _, c := range []struct {
		kind string
		data any
		keys []string
	}{
		{"press", PressEvent{Source: "gpio", Time: at}, []string{"source", "time"}},
		{"ring", RingEvent{Ring: 1, RangAt: at, Paths: []string{"classic"}, PressToRing: 0.01},
			[]string{"ring", "rang_at", "paths", "press_to_ring_seconds"}},
		{"call", CallEvent{Ring: 1, RangAt: at, Outcome: OutcomeConnected, Path: "classic", AnsweredBy: "@a:hs", AnswerToMedia: 0.5},
			[]string{"ring", "rang_at", "outcome", "path", "answered_by", "answer_to_media_seconds"}},
		{"call", CallEvent{RangAt: at, Outcome: OutcomeFailed, Error: "away"}, []string{"ring", "rang_at", "outcome", "error"}},
		{"door", DoorEvent{Verdict: VerdictUnauthorized, Why: "x", EventID: "$e", Sender: "@m:hs", Room: "!r:hs"},
			[]string{"verdict", "why", "event_id", "sender", "room", "reaction"}},
		{"relay", RelayEvent{On: true, At: at, Pulse: time.Second, EventID: "$e", Sender: "@a:hs", Room: "!r:hs"},
			[]string{"on", "at", "pulse_ns", "event_id", "sender", "room"}},
	} {
		b.publish(c.kind, c.data)
		var ev struct {
			Kind string                     `json:"kind"`
			Type string                     `json:"type"`
			Time time.Time                  `json:"time"`
			Data map[string]json.RawMessage `json:"data"`
		}
		if err := json.Unmarshal(<-ch, &ev); err != nil {
			t.Fatal(err)
		}
		if ev.Kind != c.kind || ev.Type != c.kind+".v1" || ev.Time.IsZero() {
			t.Errorf("%s: envelope kind %q type %q time %v", c.kind, ev.Kind, ev.Type, ev.Time)
		}
		got := slices.Sorted(maps.Keys(ev.Data))
		want := slices.Sorted(slices.Values(c.keys))
		if !slices.Equal(got, want) {
			t.Errorf("%s: fields %v, want %v", c.kind, got, want)
		}
	}
}
