package daemon

import (
	"context"
	"sync"
)

// queue is an unbounded FIFO between producers that must never block
// (sync hooks, peer and SFU callbacks, timers) and the one goroutine that
// consumes it: push wakes the consumer, which takes everything queued.
// The zero value is ready to use.
type queue[T any] struct {
	mu    sync.Mutex
	items []T
	once  sync.Once
	ready chan struct{} // capacity 1: items is not empty
}

func (q *queue[T]) signal() chan struct{} {
	q.once.Do(func() { q.ready = make(chan struct{}, 1) })
	return q.ready
}

func (q *queue[T]) push(v T) {
	q.mu.Lock()
	q.items = append(q.items, v)
	q.mu.Unlock()
	select {
	case q.signal() <- struct{}{}:
	default:
	}
}

// wait is readable when items may have been pushed since the last take.
func (q *queue[T]) wait() <-chan struct{} { return q.signal() }

func (q *queue[T]) take() []T {
	q.mu.Lock()
	defer q.mu.Unlock()
	out := q.items
	q.items = nil
	return out
}

// sendQueue runs Matrix requests one at a time in the order queued: a
// ring must follow its membership, a leave must follow the join.
type sendQueue struct{ q queue[func(context.Context)] }

func (s *sendQueue) add(f func(context.Context)) { s.q.push(f) }

func (s *sendQueue) run(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-s.q.wait():
		}
		s.flush(ctx)
	}
}

// flush runs what is queued now (at shutdown: the leaves).
func (s *sendQueue) flush(ctx context.Context) {
	for _, f := range s.q.take() {
		f(ctx)
	}
}

// latest holds the last value of a status and hands it to subscribers: a
// slow reader misses intermediate values, never the last one.
type latest[T any] struct {
	mu   sync.Mutex
	v    T
	subs map[chan T]struct{}
}

func (l *latest[T]) get() T {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.v
}

func (l *latest[T]) publish(v T) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.v = v
	for ch := range l.subs {
		select {
		case <-ch:
		default:
		}
		ch <- v
	}
}

func (l *latest[T]) subscribe() (<-chan T, func()) {
	ch := make(chan T, 1)
	l.mu.Lock()
	if l.subs == nil {
		l.subs = map[chan T]struct{}{}
	}
	l.subs[ch] = struct{}{}
	l.mu.Unlock()
	return ch, func() { l.mu.Lock(); delete(l.subs, ch); l.mu.Unlock() }
}
