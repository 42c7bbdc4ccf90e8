package runloop

import (
	"sync"
	"time"
)

// AfterFunc schedules f to run on a goroutine of its own after d and
// returns a handle to cancel it. time.AfterFunc is the model; a test can
// pass a fake clock, or use the real one inside a testing/synctest bubble.
type AfterFunc func(d time.Duration, f func()) Stopper

// Stopper cancels a scheduled function; *time.Timer is one.
type Stopper interface {
	// Stop reports whether it prevented the function from running.
	Stop() bool
}

// SystemClock is AfterFunc on the system clock: time.AfterFunc.
func SystemClock(d time.Duration, f func()) Stopper { return time.AfterFunc(d, f) }

// Timers is the timer table of a loop whose state machine names its
// timers (StartTimer{ID, After} and StopTimer{ID} effects): at most one
// timer per id, and a fired timer leaves the table by itself, so ids that
// carry a call ID do not pile up.
//
// Start, Stop and StopAll are for the owning loop's goroutine only. The
// fire functions run on timer goroutines and should only enqueue (push a
// TimerFired into the loop's Queue).
//
// The zero value uses the system clock.
type Timers[K comparable] struct {
	after AfterFunc

	mu sync.Mutex // the table is also touched by timers as they fire
	m  map[K]*timerEntry
}

type timerEntry struct{ s Stopper }

// NewTimers returns an empty table on the clock after; nil means
// [SystemClock].
func NewTimers[K comparable](after AfterFunc) *Timers[K] {
	return &Timers[K]{after: after}
}

// Start runs fire after d, replacing (stopping) any timer with the same
// id.
//
// fire is not called if the timer is stopped or replaced before it goes
// off. A fire already under way when Stop is called cannot be taken back,
// though: its event may already be queued. The loop must therefore still
// accept a stale event, as the call machines do: they ignore a TimerFired
// whose timer they are no longer waiting for.
func (t *Timers[K]) Start(id K, d time.Duration, fire func()) {
	e := new(timerEntry)
	t.mu.Lock()
	if t.m == nil {
		t.m = map[K]*timerEntry{}
	}
	old := t.m[id]
	t.m[id] = e
	t.mu.Unlock()
	if old != nil {
		old.s.Stop()
	}
	after := t.after
	if after == nil {
		after = SystemClock
	}
	// Outside the lock: a fake clock may run f before returning.
	e.s = after(d, func() {
		t.mu.Lock()
		current := t.m[id] == e
		if current {
			delete(t.m, id)
		}
		t.mu.Unlock()
		if current {
			fire()
		}
	})
}

// Stop cancels the timer id, if any.
func (t *Timers[K]) Stop(id K) {
	t.mu.Lock()
	e := t.m[id]
	delete(t.m, id)
	t.mu.Unlock()
	if e != nil {
		e.s.Stop()
	}
}

// StopAll cancels every timer, on the loop's way out.
func (t *Timers[K]) StopAll() {
	t.mu.Lock()
	m := t.m
	t.m = nil
	t.mu.Unlock()
	for _, e := range m {
		e.s.Stop()
	}
}

// Len returns how many timers are pending.
func (t *Timers[K]) Len() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.m)
}
