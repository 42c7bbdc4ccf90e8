package media

import (
	"context"
	"time"
)

// pacer releases a caller once per period on a fixed grid, so a slow frame
// does not shift the following ones. When the caller falls more than a few
// periods behind it skips ahead instead of bursting.
type pacer struct {
	period time.Duration
	next   time.Time
	timer  *time.Timer
}

func newPacer(period time.Duration) *pacer { return &pacer{period: period} }

// wait blocks until the next slot and returns the time it woke.
func (p *pacer) wait(ctx context.Context) (time.Time, error) {
	now := time.Now()
	if p.next.IsZero() {
		p.next = now
	}
	if d := p.next.Sub(now); d > 0 {
		if p.timer == nil {
			p.timer = time.NewTimer(d)
		} else {
			p.timer.Reset(d)
		}
		select {
		case <-ctx.Done():
			p.timer.Stop()
			return time.Time{}, ctx.Err()
		case now = <-p.timer.C:
		}
	} else if -d > 4*p.period {
		p.next = now
	}
	if err := ctx.Err(); err != nil {
		return time.Time{}, err
	}
	p.next = p.next.Add(p.period)
	return now, nil
}

func (p *pacer) stop() {
	if p.timer != nil {
		p.timer.Stop()
	}
}
