package runloop

import "sync"

// Queue is an unbounded FIFO between producers that must never block
// (library callbacks, timers, other loops) and the one goroutine that
// consumes it. Push wakes the consumer, which takes everything queued at
// once:
//
//	for {
//		select {
//		case <-ctx.Done():
//			return
//		case <-q.Wait():
//		}
//		for _, ev := range q.Take() {
//			step(ev)
//		}
//	}
//
// It is unbounded because dropping an input would wedge the state machine
// it feeds and blocking a producer could deadlock it against the loop.
// The zero value is an empty queue ready to use.
type Queue[T any] struct {
	mu    sync.Mutex
	items []T
	ready chan struct{} // capacity 1: something was pushed since the signal was last read
}

// signal returns the wake-up channel, made on first use so that the zero
// value works. q.mu must be held.
func (q *Queue[T]) signal() chan struct{} {
	if q.ready == nil {
		q.ready = make(chan struct{}, 1)
	}
	return q.ready
}

// Push appends v. It never blocks.
func (q *Queue[T]) Push(v T) {
	q.mu.Lock()
	q.items = append(q.items, v)
	ready := q.signal()
	q.mu.Unlock()
	select {
	case ready <- struct{}{}:
	default: // a wake-up is already pending; it covers v too
	}
}

// Wait returns a channel that is readable when items may have been pushed
// since it was last read. A wake-up can find the queue already empty (a
// Take in between emptied it), so the consumer must accept an empty Take.
func (q *Queue[T]) Wait() <-chan struct{} {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.signal()
}

// Take removes and returns everything queued, oldest first; nil if the
// queue is empty.
func (q *Queue[T]) Take() []T {
	q.mu.Lock()
	defer q.mu.Unlock()
	out := q.items
	q.items = nil
	return out
}

// Len returns how many items are queued.
func (q *Queue[T]) Len() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.items)
}
