package runloop

import "sync"

// Latest holds the latest value of something that changes (a call
// status) for any number of readers. Get reads it; a subscriber's channel
// receives it after every Publish. A slow subscriber misses intermediate
// values, never the last one: its channel holds one value, which each
// Publish replaces. So a publisher (a call loop) is never held up by a
// reader (a web client, a door display), and a reader that wakes up late
// still sees how things are now.
//
// The zero value holds T's zero value and has no subscribers.
type Latest[T any] struct {
	mu   sync.Mutex
	v    T
	subs map[chan T]struct{}
}

// NewLatest returns a Latest holding v.
func NewLatest[T any](v T) *Latest[T] { return &Latest[T]{v: v} }

// Publish makes v the latest value and hands it to every subscriber. It
// never blocks.
func (l *Latest[T]) Publish(v T) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.v = v
	for ch := range l.subs {
		select {
		case <-ch: // drop the value the reader has not taken yet
		default:
		}
		// Only Publish sends, under l.mu, and the channel was just
		// emptied: this never blocks.
		ch <- v
	}
}

// Get returns the latest value.
func (l *Latest[T]) Get() T {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.v
}

// Subscribe returns a channel that receives the latest value after every
// Publish from now on, and a function that ends the subscription (the
// channel is not closed; calling it twice is harmless). The current value
// is not sent: a reader that needs it calls Get after Subscribe, and so
// misses nothing.
func (l *Latest[T]) Subscribe() (<-chan T, func()) {
	ch := make(chan T, 1)
	l.mu.Lock()
	if l.subs == nil {
		l.subs = map[chan T]struct{}{}
	}
	l.subs[ch] = struct{}{}
	l.mu.Unlock()
	return ch, func() {
		l.mu.Lock()
		delete(l.subs, ch)
		l.mu.Unlock()
	}
}
