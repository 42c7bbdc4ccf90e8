package mqtt

import (
	"testing"
	"time"

	"github.com/doorbell/intercom/callengine"
	"github.com/doorbell/intercom/device"
)

// TestVisitorTracker follows visitors through the door's events as the
// history does: the outcome words, who answered, and a door opening only
// while the visit is on or within doorGrace after it ended.
func TestVisitorTracker(t *testing.T) {
	const alice = callengine.UserID("@alice:hs.test")
	t0 := time.Unix(1_800_000_000, 0)
	ev := func(at time.Time, data any) device.Event { return device.Event{Time: at, Data: data} }
	relay := func(at time.Time) device.Event {
		return ev(at, device.RelayEvent{On: true, At: at, Sender: alice})
	}
	for _, c := range []struct {
		name       string
		evs        []device.Event
		outcome    string
		answeredBy callengine.UserID
		opened     bool
		ended      bool
	}{
		{"ringing", []device.Event{ev(t0, device.RingEvent{Ring: 1, RangAt: t0})}, "ringing", "", false, false},
		{"answered, opened during the call, ended", []device.Event{
			ev(t0, device.RingEvent{Ring: 1, RangAt: t0}),
			ev(t0.Add(time.Second), device.CallEvent{Ring: 1, RangAt: t0, Outcome: device.OutcomeAnswered, Path: "classic", AnsweredBy: alice}),
			ev(t0.Add(2*time.Second), device.CallEvent{Ring: 1, RangAt: t0, Outcome: device.OutcomeConnected, Path: "classic", AnsweredBy: alice}),
			relay(t0.Add(5 * time.Second)),
			ev(t0.Add(9*time.Second), device.CallEvent{Ring: 1, RangAt: t0, Outcome: device.OutcomeEnded, Path: "classic", AnsweredBy: alice}),
		}, "answered", alice, true, true},
		{"missed, opened a minute later", []device.Event{
			ev(t0, device.RingEvent{Ring: 1, RangAt: t0}),
			ev(t0.Add(time.Minute), device.CallEvent{Ring: 1, RangAt: t0, Outcome: device.OutcomeMissed}),
			relay(t0.Add(2 * time.Minute)),
		}, "missed", "", true, true},
		{"missed, opened too late", []device.Event{
			ev(t0, device.RingEvent{Ring: 1, RangAt: t0}),
			ev(t0.Add(time.Minute), device.CallEvent{Ring: 1, RangAt: t0, Outcome: device.OutcomeMissed}),
			relay(t0.Add(4 * time.Minute)),
		}, "missed", "", false, true},
		{"failed before any ring", []device.Event{
			ev(t0, device.CallEvent{RangAt: t0, Outcome: device.OutcomeFailed, Error: "not connected"}),
			relay(t0.Add(time.Second)),
		}, "failed", "", false, true},
		{"opened before the press", []device.Event{
			relay(t0.Add(-time.Second)),
			ev(t0, device.RingEvent{Ring: 1, RangAt: t0}),
			relay(t0.Add(-time.Second)),
		}, "ringing", "", false, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			var tr visitorTracker
			for _, e := range c.evs {
				tr.observe(e)
			}
			v := tr.v
			if v == nil {
				t.Fatal("no visitor")
			}
			if v.Outcome != c.outcome || v.AnsweredBy != c.answeredBy || v.DoorOpened != c.opened || (v.EndedAt != nil) != c.ended || !v.RangAt.Equal(t0) {
				t.Errorf("visitor %+v", *v)
			}
		})
	}
}
