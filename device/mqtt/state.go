package mqtt

import (
	"time"

	"github.com/doorbell/intercom/callengine"
	"github.com/doorbell/intercom/device"
)

// The retained state topics, under the topic prefix. A subscriber that
// connects at any time gets the latest of each at once; the publisher
// sends them again after every reconnect, so a broker that forgot its
// retained messages (a restart without persistence) has them back.
const (
	topicAvailability = "availability" // "online", or "offline" (the last will)
	topicState        = "state"        // State
	topicLastVisitor  = "last_visitor" // Visitor
	topicEvent        = "event/"       // + the event's kind; not retained
)

// Availability payloads (Home Assistant's defaults).
const (
	online  = "online"
	offline = "offline"
)

// State is the state topic's payload: the merged call phase of every
// ring path (idle, ringing, in_call), as /api/status's state.
type State struct {
	State callengine.Phase `json:"state"`
	Since time.Time        `json:"since,omitzero"`
}

// stateOf reads the state from a "status" event's document.
func stateOf(st device.Status) State {
	ph := st.State
	if ph == "" {
		ph = callengine.PhaseIdle
	}
	return State{State: ph, Since: st.Since}
}

// Visitor is the last_visitor topic's payload: the newest visitor, with
// the fields and outcome words of /api/history (ringing, answered,
// missed, failed), followed from the same events.
type Visitor struct {
	RangAt       time.Time         `json:"rang_at"`
	Ring         uint64            `json:"ring,omitempty"`
	Outcome      string            `json:"outcome"`
	Paths        []string          `json:"paths,omitempty"`
	Path         string            `json:"path,omitempty"`
	AnsweredBy   callengine.UserID `json:"answered_by,omitempty"`
	EndedAt      *time.Time        `json:"ended_at,omitempty"`
	DoorOpened   bool              `json:"door_opened"`
	DoorOpenedBy callengine.UserID `json:"door_opened_by,omitempty"`
}

// doorGrace is how long after a visit ended a door opening still counts
// as opened for that visitor: the history's rule (device/history.go).
const doorGrace = 2 * time.Minute

// visitorTracker follows the last visitor from the door's events. Only
// the publisher's Observe touches it, under the publisher's lock.
type visitorTracker struct {
	v     *Visitor
	ended time.Time
}

// observe updates the visitor from ev and reports whether it changed.
func (t *visitorTracker) observe(ev device.Event) bool {
	switch d := ev.Data.(type) {
	case device.RingEvent:
		if t.v == nil || !t.v.RangAt.Equal(d.RangAt) {
			t.v, t.ended = &Visitor{RangAt: d.RangAt}, time.Time{}
		}
		t.v.Ring, t.v.Paths, t.v.Outcome, t.v.EndedAt = d.Ring, d.Paths, device.OutcomeRinging, nil
		return true
	case device.CallEvent:
		if t.v == nil || !t.v.RangAt.Equal(d.RangAt) {
			// A visitor the ring event did not announce: a press no
			// path could ring fails before any ring.
			t.v, t.ended = &Visitor{RangAt: d.RangAt, Ring: d.Ring}, time.Time{}
		}
		switch d.Outcome {
		case device.OutcomeAnswered, device.OutcomeConnected:
			t.v.Outcome, t.v.Path, t.v.AnsweredBy = device.OutcomeAnswered, d.Path, d.AnsweredBy
		case device.OutcomeEnded:
			t.v.Outcome = device.OutcomeAnswered
			t.end(ev.Time)
		case device.OutcomeMissed, device.OutcomeFailed:
			t.v.Outcome = d.Outcome
			t.end(ev.Time)
		default:
			return false
		}
		return true
	case device.RelayEvent:
		if !d.On || t.v == nil || t.v.RangAt.After(d.At) || t.v.Outcome == device.OutcomeFailed {
			return false
		}
		if !t.ended.IsZero() && d.At.Sub(t.ended) > doorGrace {
			return false
		}
		t.v.DoorOpened, t.v.DoorOpenedBy = true, d.Sender
		return true
	}
	return false
}

func (t *visitorTracker) end(at time.Time) {
	t.ended = at
	t.v.EndedAt = &at
}
