package alsa

import (
	"context"
	"time"

	"github.com/doorbell/intercom/media"
)

// pacer keeps a device without a clock to real time. A sound card is its
// own clock: reads block until a period was captured, writes until the
// buffer has room. alsa-lib's null plugin (under the file plugin that tests
// and hwtest use) has none and moves any amount at once; a microphone read
// that way would feed the encoder as fast as the CPU allows. So when a
// transfer returned at once and the stream is ahead of the wall clock by
// more than lead (the device buffer, for playback), the caller sleeps off
// the difference. A real card never triggers it: when it returns at once it
// is because audio was waiting, i.e. the stream is behind, not ahead.
type pacer struct {
	lead   time.Duration
	start  time.Time
	frames int64
}

// instant is how quickly a transfer must return to count as clockless.
const instant = 2 * time.Millisecond

func (c *pacer) reset() { c.start = time.Time{} }

func (c *pacer) pace(ctx context.Context, n int, took time.Duration) error {
	now := time.Now()
	if c.start.IsZero() {
		c.start, c.frames = now, 0
	}
	c.frames += int64(n)
	ahead := time.Duration(c.frames)*time.Second/media.SampleRate - now.Sub(c.start)
	if ahead < -200*time.Millisecond {
		// Far behind (a stall, a suspended machine): start afresh rather
		// than rushing to catch up.
		c.start, c.frames = now, 0
		return nil
	}
	if took > instant || ahead <= c.lead {
		return nil
	}
	t := time.NewTimer(ahead - c.lead)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
