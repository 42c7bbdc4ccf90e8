package livekit

import (
	"sync"
	"time"
)

// EventKind says what an Event reports.
type EventKind int

const (
	// ParticipantJoined: a remote participant is in the room. Participants
	// already there when Join returns are reported too, first.
	ParticipantJoined EventKind = iota + 1
	// ParticipantLeft: a remote participant left the room (or the SDK lost
	// sight of it while reconnecting; it is reported joined again after).
	ParticipantLeft
	// Reconnecting: the connection to the SFU broke; the SDK is resuming
	// it (it retries for about a minute before giving up).
	Reconnecting
	// Reconnected: the connection is back.
	Reconnected
	// Disconnected: the SFU connection is over for good (the server shut
	// down or was lost, the room closed, we were removed). The Publisher
	// has released its encoders; Close it. It is the last event.
	Disconnected
)

func (k EventKind) String() string {
	switch k {
	case ParticipantJoined:
		return "participant_joined"
	case ParticipantLeft:
		return "participant_left"
	case Reconnecting:
		return "reconnecting"
	case Reconnected:
		return "reconnected"
	case Disconnected:
		return "disconnected"
	}
	return "unknown"
}

// Event is one change of the room as the Publisher sees it.
type Event struct {
	Kind     EventKind
	Identity string    // ParticipantJoined, ParticipantLeft: the LiveKit identity
	Reason   string    // Disconnected: LiveKit's disconnect reason, e.g. "ROOM_CLOSED"
	At       time.Time // when the Publisher learned of it
}

// eventQueue is an unbounded FIFO between the SDK's callbacks, which must
// never block, and the one goroutine that hands events to the reader of
// Publisher.Events.
type eventQueue struct {
	mu    sync.Mutex
	items []Event
	ready chan struct{} // capacity 1: items is not empty
}

func newEventQueue() *eventQueue {
	return &eventQueue{ready: make(chan struct{}, 1)}
}

func (q *eventQueue) push(ev Event) {
	q.mu.Lock()
	q.items = append(q.items, ev)
	q.mu.Unlock()
	select {
	case q.ready <- struct{}{}:
	default:
	}
}

// take removes and returns everything queued.
func (q *eventQueue) take() []Event {
	q.mu.Lock()
	defer q.mu.Unlock()
	items := q.items
	q.items = nil
	return items
}

// run delivers queued events to out in order until done is closed, then
// closes out. Events still queued then are dropped: whoever closed the
// Publisher is no longer listening.
func (q *eventQueue) run(out chan<- Event, done <-chan struct{}) {
	defer close(out)
	for {
		select {
		case <-done:
			return
		case <-q.ready:
		}
		for _, ev := range q.take() {
			select {
			case out <- ev:
			case <-done:
				return
			}
		}
	}
}
