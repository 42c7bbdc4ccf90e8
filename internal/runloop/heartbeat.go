package runloop

import (
	"sync/atomic"
	"time"
)

// HeartbeatEvery is how often an idle loop that reports a heartbeat goes
// round anyway (a ticker case in its select). The systemd watchdog
// (daemon/supervise.go) stops being petted when a loop's heartbeat grows
// stale, so a loop stuck in one of its steps gets the daemon restarted
// before a visitor's press is the one that finds it.
const HeartbeatEvery = time.Second

// Heartbeat is when a loop last went round. It keeps the monotonic clock
// reading, so a wall clock stepped by NTP at boot does not look like a
// stuck loop. The zero value has never beaten.
type Heartbeat struct{ at atomic.Pointer[time.Time] }

// Beat records that the loop went round now.
func (h *Heartbeat) Beat() {
	now := time.Now()
	h.at.Store(&now)
}

// Last is when the loop last went round; zero if never.
func (h *Heartbeat) Last() time.Time {
	if t := h.at.Load(); t != nil {
		return *t
	}
	return time.Time{}
}

// BeatUntil beats h every HeartbeatEvery on a goroutine of its own until
// the returned stop is called (stop waits for it): for a loop that must
// first wait for something outside (a room to join through a homeserver
// outage) and is alive, not stuck, meanwhile.
func (h *Heartbeat) BeatUntil() (stop func()) {
	h.Beat()
	quit, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		tick := time.NewTicker(HeartbeatEvery)
		defer tick.Stop()
		for {
			select {
			case <-quit:
				return
			case <-tick.C:
				h.Beat()
			}
		}
	}()
	return func() { close(quit); <-done }
}
