package runloop

import (
	"context"
	"math"
	"time"
)

// Backoff spaces out the attempts of something that keeps failing (a
// homeserver that is down, a camera that is unplugged): Base·2^(n-1)
// before retry n, capped at Max, reset on success.
//
// With Jitter set, the wait is "equal jitter": half of it fixed, half
// random, so that many intercoms knocked out by one outage do not come back
// in lockstep, while none ever retries in a tight loop.
//
// The zero value never waits; set at least Base. A Backoff belongs to one
// goroutine.
type Backoff struct {
	// Base is the wait before the first retry.
	Base time.Duration
	// Max caps the wait; 0 means no cap.
	Max time.Duration
	// Jitter returns a random number in [0, n), as math/rand/v2's Int64N
	// does; nil means no jitter. Tests pass a fixed function.
	Jitter func(n int64) int64

	attempt int
}

// Next returns the wait before the next retry and counts the attempt.
func (b *Backoff) Next() time.Duration {
	if b.attempt < math.MaxInt32 {
		b.attempt++
	}
	return b.Delay(b.attempt)
}

// Reset starts again from Base, after a success.
func (b *Backoff) Reset() { b.attempt = 0 }

// Delay returns the wait before retry number attempt (1-based) without
// changing b. It is for loops that count their failures themselves.
func (b *Backoff) Delay(attempt int) time.Duration {
	if attempt < 1 {
		attempt = 1
	}
	d := time.Duration(math.MaxInt64)
	if shift := attempt - 1; shift < 63 {
		if e := b.Base << shift; e>>shift == b.Base && e >= 0 {
			d = e // no overflow
		}
	}
	if b.Max > 0 && d > b.Max {
		d = b.Max
	}
	if b.Jitter == nil || d <= 0 {
		return d
	}
	half := d / 2
	return half + time.Duration(b.Jitter(int64(half)+1)) // in [half, 2·half]
}

// Sleep waits for d or until ctx ends, whichever comes first; in the
// latter case it returns ctx's cause.
func Sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return context.Cause(ctx)
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return context.Cause(ctx)
	}
}
