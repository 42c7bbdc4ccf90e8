package device

import (
	"sync/atomic"
	"time"
)

// DefaultHeartbeat is how often an idle loop (the press loop, the door
// runner) reports that it is alive. The systemd watchdog
// (daemon/supervise.go) stops being petted when a loop's heartbeat grows stale, so a
// loop stuck in a press or a door command gets the daemon restarted.
const DefaultHeartbeat = time.Second

// heartbeat is when a loop last went round. It keeps the monotonic clock
// reading, so a wall clock stepped by NTP at boot does not look like a
// stuck loop.
type heartbeat struct{ at atomic.Pointer[time.Time] }

func (h *heartbeat) beat() {
	now := time.Now()
	h.at.Store(&now)
}

func (h *heartbeat) last() time.Time {
	if t := h.at.Load(); t != nil {
		return *t
	}
	return time.Time{}
}
