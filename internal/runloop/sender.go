package runloop

import (
	"context"
	"sync"
)

// Sender runs work one item at a time in the order it was added, so that
// requests whose order matters (a ring must follow its membership, a leave
// must follow the join) go out in that order while the loop that adds them
// never waits for the network.
//
// Run executes items on its own goroutine. Flush executes, on the caller's
// goroutine, what Run has not done yet; that is how the final requests of
// a shutdown (the leaves) are sent after Run's context has ended, with a
// context that is still alive. Run and Flush never execute two items at
// once, whichever of them holds the turn, so the order holds across the
// hand-over.
//
// The zero value is ready to use.
type Sender struct {
	once sync.Once
	turn chan struct{} // capacity 1: held while an item executes
	wake chan struct{} // capacity 1: an item was added

	mu    sync.Mutex
	items []func(context.Context)
	added uint64 // items ever added
	taken uint64 // items ever taken out to execute
}

func (s *Sender) init() {
	s.once.Do(func() {
		s.turn = make(chan struct{}, 1)
		s.wake = make(chan struct{}, 1)
	})
}

// Add queues f. It never blocks. f receives the context of whichever of
// Run or Flush executes it.
func (s *Sender) Add(f func(ctx context.Context)) {
	s.init()
	s.mu.Lock()
	s.items = append(s.items, f)
	s.added++
	s.mu.Unlock()
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// Run executes items as they are added until ctx ends. It returns after
// the item under way, if any, has finished; items not yet started stay
// queued for Flush.
func (s *Sender) Run(ctx context.Context) {
	s.init()
	for {
		select {
		case <-ctx.Done():
			return
		case <-s.wake:
		}
		for ctx.Err() == nil {
			ran, err := s.runOne(ctx, ^uint64(0))
			if err != nil || !ran {
				break
			}
		}
	}
}

// Flush returns once every item added before the call has executed. It
// waits for an item that Run is executing, then executes the rest itself
// with ctx. If ctx ends first it returns ctx's cause and leaves the items
// not yet started queued.
func (s *Sender) Flush(ctx context.Context) error {
	s.init()
	s.mu.Lock()
	target := s.added
	s.mu.Unlock()
	for {
		ran, err := s.runOne(ctx, target)
		if err != nil {
			return err
		}
		if !ran {
			return nil
		}
	}
}

// runOne takes the turn and executes the oldest item if fewer than limit
// items have been taken so far. It reports whether it executed one.
func (s *Sender) runOne(ctx context.Context, limit uint64) (bool, error) {
	if err := context.Cause(ctx); err != nil {
		return false, err
	}
	select {
	case s.turn <- struct{}{}:
	case <-ctx.Done():
		return false, context.Cause(ctx)
	}
	defer func() { <-s.turn }()
	s.mu.Lock()
	if len(s.items) == 0 || s.taken >= limit {
		s.mu.Unlock()
		return false, nil
	}
	f := s.items[0]
	s.items[0] = nil // let the closure be collected
	s.items = s.items[1:]
	s.taken++
	s.mu.Unlock()
	f(ctx)
	return true, nil
}
