package group

import (
	"maps"
	"slices"
	"time"
)

// Reorder puts one sender's to-device events of one call back in seq
// order (js-sdk callEventHandler; MSC3401). To-device messages may arrive
// out of order, and a candidates event processed before its invite would
// be lost. Events without seq pass at once. A gap is waited for at most
// ReorderWait (Flush), then skipped; a duplicate or old seq is dropped.
type Reorder struct {
	next    int64
	buf     map[int64]ToDevice
	waiting time.Time // when the oldest buffered event arrived; zero if none
}

// ReorderWait bounds the wait for a missing seq; MaxReorderBuffer the
// events held meanwhile.
const (
	ReorderWait      = time.Second
	MaxReorderBuffer = 64
)

// Push hands ev over and returns the events now deliverable, in order.
func (r *Reorder) Push(now time.Time, ev ToDevice) []ToDevice {
	if ev.Seq == nil {
		return []ToDevice{ev}
	}
	seq := *ev.Seq
	switch {
	case seq < r.next:
		return nil // duplicate or too late
	case seq == r.next:
		r.next++
		return append([]ToDevice{ev}, r.drain()...)
	}
	if r.buf == nil {
		r.buf = map[int64]ToDevice{}
	}
	if _, dup := r.buf[seq]; !dup {
		r.buf[seq] = ev
	}
	if r.waiting.IsZero() {
		r.waiting = now
	}
	if len(r.buf) > MaxReorderBuffer {
		return r.Flush()
	}
	return nil
}

// Deadline is when Flush should run; zero if nothing waits.
func (r *Reorder) Deadline() time.Time {
	if r.waiting.IsZero() {
		return time.Time{}
	}
	return r.waiting.Add(ReorderWait)
}

// Flush gives up on the gap: every buffered event is delivered in seq
// order and the next expected seq follows the last one.
func (r *Reorder) Flush() []ToDevice {
	keys := slices.Sorted(maps.Keys(r.buf))
	out := make([]ToDevice, 0, len(keys))
	for _, k := range keys {
		out = append(out, r.buf[k])
		r.next = k + 1
	}
	clear(r.buf)
	r.waiting = time.Time{}
	return out
}

func (r *Reorder) drain() []ToDevice {
	var out []ToDevice
	for {
		ev, ok := r.buf[r.next]
		if !ok {
			break
		}
		delete(r.buf, r.next)
		out = append(out, ev)
		r.next++
	}
	if len(r.buf) == 0 {
		r.waiting = time.Time{}
	}
	return out
}
