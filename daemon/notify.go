package daemon

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"

	"github.com/doorbell/intercom/matrix"
)

// The daemon speaks systemd's service notification protocol (sd_notify(3)):
// READY=1 once the Matrix sync and the hardware are up, WATCHDOG=1 while
// the main loops make progress, STOPPING=1 when it begins to stop. Outside
// systemd (no NOTIFY_SOCKET) every message is dropped and nothing else
// changes.
//
// go-systemd's daemon package does the socket work: it is small, kept by
// the systemd/CoreOS people, imports only the standard library, and handles
// abstract socket addresses ("@…") as systemd hands them out.

const (
	// readyPoll is how often the start-up checks whether the first sync has
	// succeeded. The first sync asks for an immediate answer, so readiness
	// arrives within one homeserver round trip of Run starting; polling
	// adds at most this much to the time to READY=1.
	readyPoll = 10 * time.Millisecond

	// syncStall is how long the Matrix sync loop may go without any
	// visible progress (a successful /sync, or one more counted failure)
	// before the watchdog stops being petted. A live loop shows progress at
	// least every request timeout plus backoff: 60 s for a /sync that hangs
	// (30 s long poll + 30 s request allowance) and at most 30 s of backoff.
	// A homeserver that is down therefore does not restart the intercom
	// (a restart cannot fix the network and would only drop the local API);
	// a loop that hangs in-process does.
	syncStall = 2 * time.Minute
)

// notifier sends one sd_notify message.
type notifier interface {
	Notify(state string) error
}

// sdNotifier sends to $NOTIFY_SOCKET; without it every message is dropped.
type sdNotifier struct{}

func (sdNotifier) Notify(state string) error {
	_, err := daemon.SdNotify(false, state)
	return err
}

// probe is one main loop the watchdog watches. check returns nil while the
// loop is alive, else why it is not.
type probe struct {
	name  string
	check func(now time.Time) error
}

// supervisor tells systemd how the daemon is doing.
type supervisor struct {
	notify notifier
	log    *slog.Logger
	// watchdog is systemd's WatchdogSec (from $WATCHDOG_USEC); 0 when the
	// unit has no watchdog.
	watchdog time.Duration
	// ready returns nil once the daemon may report READY=1.
	ready func() error
	// status is the STATUS= line sent with READY=1.
	status func() string
	probes []probe
	now    func() time.Time
	poll   time.Duration
}

// newSupervisor watches the Matrix session and the optional loop probes.
func newSupervisor(log *slog.Logger, session syncSource, status func() string, loops ...probe) *supervisor {
	wd, err := daemon.SdWatchdogEnabled(false)
	if err != nil {
		log.Warn("systemd watchdog settings ignored", "err", err)
		wd = 0
	}
	sp := &syncProgress{status: session.Status, stall: syncStall}
	return &supervisor{
		notify:   sdNotifier{},
		log:      log,
		watchdog: wd,
		ready: func() error {
			if !session.Healthy() {
				return fmt.Errorf("matrix sync not up yet")
			}
			return nil
		},
		status: status,
		probes: append([]probe{{name: "matrix sync", check: sp.check}}, loops...),
		now:    time.Now,
		poll:   readyPoll,
	}
}

// syncSource is the part of the Matrix session the supervisor reads.
type syncSource interface {
	Healthy() bool
	Status() matrix.Status
}

// Run reports READY=1 once ready, pets the watchdog at half its interval
// while every probe passes, and sends STOPPING=1 when ctx ends. It returns
// nil when ctx ends.
func (s *supervisor) Run(ctx context.Context) error {
	defer s.send("STOPPING=1")
	tick := time.NewTicker(s.poll)
	for s.ready() != nil {
		select {
		case <-ctx.Done():
			tick.Stop()
			return nil
		case <-tick.C:
		}
	}
	tick.Stop()
	st := "READY=1"
	if s.status != nil {
		st += "\nSTATUS=" + oneLine(s.status())
	}
	s.send(st)
	if s.watchdog <= 0 {
		<-ctx.Done()
		return nil
	}
	// Half the interval, as sd_watchdog_enabled(3) recommends, so one late
	// tick does not fire the watchdog.
	pet := time.NewTicker(s.watchdog / 2)
	defer pet.Stop()
	failing := ""
	s.petIfAlive(&failing)
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-pet.C:
			s.petIfAlive(&failing)
		}
	}
}

// petIfAlive pings the watchdog when every probe passes. failing remembers
// which loops were last reported stuck, so a stuck loop is logged once, not
// at each tick.
func (s *supervisor) petIfAlive(failing *string) {
	now := s.now()
	var bad, names []string
	for _, p := range s.probes {
		if err := p.check(now); err != nil {
			bad = append(bad, p.name+": "+err.Error())
			names = append(names, p.name)
		}
	}
	if len(bad) > 0 {
		// Reported when the set of stuck loops changes, not every tick.
		if key := strings.Join(names, ","); key != *failing {
			msg := strings.Join(bad, "; ")
			s.log.Error("main loop stuck; no longer petting the systemd watchdog", "err", msg, "watchdog", s.watchdog)
			s.send("STATUS=stuck: " + oneLine(msg))
			*failing = key
		}
		return
	}
	if *failing != "" {
		s.log.Info("main loops healthy again; petting the systemd watchdog")
		*failing = ""
	}
	s.send("WATCHDOG=1")
}

func (s *supervisor) send(state string) {
	if err := s.notify.Notify(state); err != nil {
		s.log.Warn("notify systemd", "state", strings.SplitN(state, "\n", 2)[0], "err", err)
	}
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
func heartbeatProbe(name string, loop any, within time.Duration) []probe {
	hb, ok := loop.(interface{ Heartbeat() time.Time })
	if !ok {
		return nil
	}
	return []probe{{name: name, check: func(now time.Time) error {
		if last := hb.Heartbeat(); now.Sub(last) > within {
			return fmt.Errorf("no heartbeat for %v", now.Sub(last).Round(time.Second))
		}
		return nil
	}}}
}

func oneLine(s string) string { return strings.ReplaceAll(s, "\n", " ") }

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
// runner, the GPIO button).
func daemonSupervisor(log *slog.Logger, session syncSource, residents int, loops ...loop) *supervisor {
	var probes []probe
	for _, l := range loops {
		probes = append(probes, heartbeatProbe(l.name, l.loop, loopHeartbeatWithin)...)
	}
	return newSupervisor(log.With("component", "systemd"), session,
		func() string { return fmt.Sprintf("ready; %d resident(s)", residents) }, probes...)
}
