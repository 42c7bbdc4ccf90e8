package daemon

import (
	"fmt"
	"log/slog"
	"time"

	"github.com/doorbell/intercom/matrix"
	"github.com/doorbell/intercom/systemd"
)

// The daemon reports to systemd through systemd.Supervisor (sd_notify(3)):
// READY=1 once the Matrix sync and the hardware are up, WATCHDOG=1 while
// the main loops make progress, STOPPING=1 when it begins to stop. This
// file says what "up" and "progress" mean for the intercom; the protocol
// lives beside the unit, in package systemd.
//
// Readiness is polled every systemd.DefaultReadyPoll (10 ms). The first
// sync asks for an immediate answer, so READY=1 arrives within one
// homeserver round trip of Run starting, plus at most that.

// syncStall is how long the Matrix sync loop may go without any visible
// progress (a successful /sync, or one more counted failure) before the
// watchdog stops being petted. A live loop shows progress at least every
// request timeout plus backoff: 60 s for a /sync that hangs (30 s long poll
// + 30 s request allowance) and at most 30 s of backoff (4 s during an
// outage, 30 s when a 429 asks for it). A homeserver that is down
// therefore does not restart the intercom (a restart cannot fix the
// network and would only drop the local API and the door): the session
// is unhealthy from its first failed /sync, but each failure it counts
// is progress. A loop that hangs in-process does restart it.
const syncStall = 2 * time.Minute

// newSupervisor watches the Matrix session and the optional loop probes.
func newSupervisor(log *slog.Logger, session syncSource, status func() string, loops ...systemd.Probe) *systemd.Supervisor {
	sp := &syncProgress{status: session.Status, stall: syncStall}
	s := systemd.NewSupervisor(log)
	s.Ready = func() error {
		if !session.Healthy() {
			return fmt.Errorf("matrix sync not up yet")
		}
		return nil
	}
	s.Status = status
	s.Probes = append([]systemd.Probe{{Name: "matrix sync", Check: sp.check}}, loops...)
	return s
}

// syncSource is the part of the Matrix session the supervisor reads.
type syncSource interface {
	Healthy() bool
	Status() matrix.Status
}

// syncProgress tells a sync loop that is stuck from one that is failing
// because the homeserver cannot be reached: the latter still counts its
// failures.
type syncProgress struct {
	status func() matrix.Status
	stall  time.Duration

	seen       bool
	last       matrix.Status
	lastChange time.Time
}

func (p *syncProgress) check(now time.Time) error {
	st := p.status()
	if !p.seen || !st.LastSync.Equal(p.last.LastSync) || st.ConsecutiveFailures != p.last.ConsecutiveFailures {
		p.seen, p.last, p.lastChange = true, st, now
	}
	if st.Healthy {
		return nil
	}
	if idle := now.Sub(p.lastChange); idle >= p.stall {
		return fmt.Errorf("no /sync finished for %v (last success %s)", idle.Round(time.Second), st.LastSync.Format(time.RFC3339))
	}
	return nil
}

// heartbeatProbe watches a loop that reports when it last went round: a
// loop implementing Heartbeat() is alive while that is recent. Loops
// without a heartbeat are watched only through the errgroup (a loop that
// returns stops the daemon, and systemd restarts it).
func heartbeatProbe(name string, loop any, within time.Duration) []systemd.Probe {
	hb, ok := loop.(interface{ Heartbeat() time.Time })
	if !ok {
		return nil
	}
	return []systemd.Probe{{Name: name, Check: func(now time.Time) error {
		if last := hb.Heartbeat(); now.Sub(last) > within {
			return fmt.Errorf("no heartbeat for %v", now.Sub(last).Round(time.Second))
		}
		return nil
	}}}
}

// loopHeartbeatWithin is how stale a loop's heartbeat may be. Loops that
// report one go round at least every second even when idle (a ticker case
// in their select, or a bounded wait on the pin), so 30 s is far beyond any
// legitimate pause yet well inside a typical WatchdogSec of a minute or
// more: a loop stuck for this long is not coming back.
const loopHeartbeatWithin = 30 * time.Second

// loop is a main loop the supervisor watches if it reports a heartbeat.
type loop struct {
	name string
	loop any
}

// daemonSupervisor is the supervisor Run runs: it watches the Matrix
// sync, and every loop that reports a heartbeat (the press loop, the door
// runner, the GPIO button, the ringer from the start; the classic call
// engine, the ring coordinator, and the household and MatrixRTC runners
// once the Matrix side runs them). The household
// runner waits for its room before its loop starts, through a homeserver
// outage too, which must not restart the service: it beats while it
// waits (runloop.Heartbeat.BeatUntil).
func daemonSupervisor(log *slog.Logger, session syncSource, side lateLoops, residents int, loops ...loop) *systemd.Supervisor {
	var probes []systemd.Probe
	for _, l := range loops {
		probes = append(probes, heartbeatProbe(l.name, l.loop, loopHeartbeatWithin)...)
	}
	if side != nil {
		probes = append(probes, systemd.Probe{Name: "matrix side", Check: side.check})
	}
	s := newSupervisor(log.With("component", "systemd"), session,
		func() string { return fmt.Sprintf("ready; %d resident(s)", residents) }, probes...)
	if side != nil {
		s.StartStatus = side.startStatus
		// The sync loop is watched once it runs.
		syncCheck := s.Probes[0].Check
		s.Probes[0].Check = func(now time.Time) error {
			if !side.syncRunning() {
				return nil
			}
			return syncCheck(now)
		}
	}
	return s
}

// lateLoops are loops that start after the supervisor (the Matrix side's,
// once the homeserver has answered): check watches those that run, and
// startStatus says what the start waits for.
type lateLoops interface {
	check(now time.Time) error
	startStatus() string
	syncRunning() bool
}
