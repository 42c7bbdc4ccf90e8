package device

import (
	"encoding/json"
	"sync"
	"time"

	"github.com/doorbell/intercom/callengine"
)

// Event is one server-sent event of /api/events. Kind names the SSE event
// ("press", "ring", "call", "door", "relay", "status", "error"); Type is
// the same name with the version of its data's shape ("press.v1"): a
// field that changes meaning gets a new version, new fields do not. The
// fields are listed in docs/ARCHITECTURE.md, "The door in the house".
type Event struct {
	Kind string    `json:"kind"`
	Type string    `json:"type"`
	Time time.Time `json:"time"`
	Data any       `json:"data"`
}

// eventVersion is the version of each kind's data.
const eventVersion = ".v1"

// PressEvent is a button press ("press"): Source is "gpio" or "api".
type PressEvent struct {
	Source string    `json:"source"`
	Time   time.Time `json:"time"`
}

// RingEvent is a ring placed for a press ("ring"): the paths it rings
// on, and how long after the press the ring was placed (every path asked
// and the classic invites handed to their senders).
type RingEvent struct {
	Ring        uint64    `json:"ring"`
	RangAt      time.Time `json:"rang_at"`
	Paths       []string  `json:"paths"`
	PressToRing float64   `json:"press_to_ring_seconds"`
}

// Call outcomes (CallEvent.Outcome), in the order a ring can go through
// them: answered, connected, ended; or missed; or failed.
const (
	OutcomeAnswered  = "answered"  // a resident answered on Path
	OutcomeConnected = "connected" // the answer's media connected
	OutcomeEnded     = "ended"     // the answered call ended
	OutcomeMissed    = "missed"    // the ring ended unanswered (timed out, rejected)
	OutcomeFailed    = "failed"    // nobody could be rung (the homeserver away, no path rang)
)

// CallEvent is a step of a ring's outcome ("call").
type CallEvent struct {
	Ring    uint64    `json:"ring"`
	RangAt  time.Time `json:"rang_at"`
	Outcome string    `json:"outcome"`
	// Path and AnsweredBy: where and by whom it was answered (answered,
	// connected, ended).
	Path       string            `json:"path,omitempty"`
	AnsweredBy callengine.UserID `json:"answered_by,omitempty"`
	// AnswerToMedia is the time from the answer to its media connecting
	// (connected only).
	AnswerToMedia float64 `json:"answer_to_media_seconds,omitempty"`
	// Error says why a ring failed (failed only).
	Error string `json:"error,omitempty"`
}

// DoorEvent is the verdict on a door command ("door"): Verdict is "open"
// or the reason it was refused (doorpolicy.go's Verdict values).
type DoorEvent struct {
	Verdict  Verdict           `json:"verdict"`
	Why      string            `json:"why"`
	EventID  string            `json:"event_id"`
	Sender   callengine.UserID `json:"sender"`
	Room     callengine.RoomID `json:"room"`
	Reaction bool              `json:"reaction"`
}

// broadcaster fans events out to the /api/events streams. A slow reader
// loses events rather than stalling the intercom. observe, if set, sees
// every event, synchronously (the metrics).
type broadcaster struct {
	observe func(Event)

	mu   sync.Mutex
	subs map[chan []byte]struct{}
}

func newBroadcaster(observe func(Event)) *broadcaster {
	return &broadcaster{observe: observe, subs: map[chan []byte]struct{}{}}
}

func (b *broadcaster) subscribe() (chan []byte, func()) {
	ch := make(chan []byte, 32)
	b.mu.Lock()
	b.subs[ch] = struct{}{}
	b.mu.Unlock()
	return ch, func() {
		b.mu.Lock()
		delete(b.subs, ch)
		b.mu.Unlock()
	}
}

func (b *broadcaster) publish(kind string, data any) {
	ev := Event{Kind: kind, Type: kind + eventVersion, Time: time.Now(), Data: data}
	if b.observe != nil {
		b.observe(ev)
	}
	raw, err := json.Marshal(ev)
	if err != nil {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	for ch := range b.subs {
		select {
		case ch <- raw:
		default:
		}
	}
}
