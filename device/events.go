package device

import (
	"encoding/json"
	"sync"
	"time"
)

// Event is one server-sent event of /api/events.
type Event struct {
	Kind string    `json:"kind"`
	Time time.Time `json:"time"`
	Data any       `json:"data"`
}

// broadcaster fans events out to the /api/events streams. A slow reader
// loses events rather than stalling the intercom.
type broadcaster struct {
	mu   sync.Mutex
	subs map[chan []byte]struct{}
}

func newBroadcaster() *broadcaster { return &broadcaster{subs: map[chan []byte]struct{}{}} }

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
	raw, err := json.Marshal(Event{Kind: kind, Time: time.Now(), Data: data})
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
