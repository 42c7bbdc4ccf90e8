package device

import "github.com/doorbell/intercom/internal/runloop"

// DefaultHeartbeat is how often an idle loop (the press loop, the door
// runner) reports that it is alive (runloop.Heartbeat): the systemd
// watchdog (daemon/supervise.go) stops being petted when a loop's
// heartbeat grows stale, so a loop stuck in a press or a door command gets
// the daemon restarted.
const DefaultHeartbeat = runloop.HeartbeatEvery
