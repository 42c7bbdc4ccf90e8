package systemd

import (
	"context"
	"log/slog"
	"strconv"
	"strings"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"
)

// A Supervisor speaks systemd's service notification protocol
// (sd_notify(3)) for the unit beside it: READY=1 once the daemon is up,
// WATCHDOG=1 while its main loops make progress, STOPPING=1 when it begins
// to stop. Outside systemd (no NOTIFY_SOCKET) every message is dropped and
// nothing else changes.
//
// go-systemd's daemon package does the socket work: it is small, kept by
// the systemd/CoreOS people, imports only the standard library and
// golang.org/x/sys/unix, and handles abstract socket addresses ("@…") as
// systemd hands them out.
//
// The package knows nothing of what it supervises: readiness, the status
// line and the loops it watches are plain functions the daemon hands in.

// DefaultReadyPoll is how often Run asks Ready until it passes. Readiness
// is therefore reported at most this long after it is reached.
const DefaultReadyPoll = 10 * time.Millisecond

// Notifier sends one sd_notify message.
type Notifier interface {
	Notify(state string) error
}

// SocketNotifier sends to $NOTIFY_SOCKET; without it every message is
// dropped.
type SocketNotifier struct{}

// Notify sends state, one or more newline-separated assignments.
func (SocketNotifier) Notify(state string) error {
	_, err := daemon.SdNotify(false, state)
	return err
}

// Probe is one main loop the watchdog watches. Check returns nil while the
// loop is alive, else why it is not; now is the Supervisor's clock.
type Probe struct {
	Name  string
	Check func(now time.Time) error
}

// Supervisor tells systemd how a daemon is doing. NewSupervisor fills in
// the watchdog interval systemd asks for; the caller sets Ready, Status and
// Probes before Run. The zero values of the other fields are usable.
type Supervisor struct {
	// Ready returns nil once the daemon may report READY=1; nil means
	// ready at once.
	Ready func() error
	// Status is the STATUS= line sent with READY=1; nil sends none.
	Status func() string
	// StartStatus is the STATUS= line sent while Ready still fails (what
	// the daemon waits for); nil sends none.
	StartStatus func() string
	// Probes are the main loops the watchdog watches.
	Probes []Probe

	// Watchdog is systemd's WatchdogSec (from $WATCHDOG_USEC); 0 when the
	// unit has no watchdog.
	Watchdog time.Duration
	// Notifier sends the messages; nil sends to $NOTIFY_SOCKET.
	Notifier Notifier
	// Now is the clock the probes are checked against; nil is time.Now.
	Now func() time.Time
	// ReadyPoll is how often Ready is asked; 0 is DefaultReadyPoll.
	ReadyPoll time.Duration
	// Log receives stuck loops and failed sends; nil discards them.
	Log *slog.Logger
}

// NewSupervisor returns a Supervisor for this process: it sends to
// $NOTIFY_SOCKET, and pets the watchdog that $WATCHDOG_USEC asks for when
// $WATCHDOG_PID is unset or names this process (sd_watchdog_enabled(3)).
// A malformed setting is logged and leaves the watchdog off.
func NewSupervisor(log *slog.Logger) *Supervisor {
	wd, err := daemon.SdWatchdogEnabled(false)
	if err != nil {
		log.Warn("systemd watchdog settings ignored", "err", err)
		wd = 0
	}
	return &Supervisor{
		Watchdog:  wd,
		Notifier:  SocketNotifier{},
		Now:       time.Now,
		ReadyPoll: DefaultReadyPoll,
		Log:       log,
	}
}

// Run reports READY=1 once ready, pets the watchdog at half its interval
// while every probe passes, and sends STOPPING=1 when ctx ends. It returns
// nil when ctx ends.
func (s *Supervisor) Run(ctx context.Context) error {
	defer s.send("STOPPING=1")
	poll := s.ReadyPoll
	if poll <= 0 {
		poll = DefaultReadyPoll
	}
	tick := time.NewTicker(poll)
	// Until READY=1 systemd's watchdog is not armed, only the start
	// timeout. The daemon's local parts already run (a door works before
	// its homeserver answers), so while they are alive the start timeout
	// is pushed on by one watchdog interval at a time (EXTEND_TIMEOUT_USEC,
	// systemd 236+): a start that waits for the network lasts as long as
	// the network is away, and a loop stuck meanwhile still ends it
	// within one interval, as the watchdog would.
	var extend <-chan time.Time
	failing := ""
	if s.Watchdog > 0 && s.Ready != nil && s.Ready() != nil {
		et := time.NewTicker(s.Watchdog / 2)
		defer et.Stop()
		extend = et.C
		s.extendIfAlive(&failing)
	}
	for s.Ready != nil && s.Ready() != nil {
		select {
		case <-ctx.Done():
			tick.Stop()
			return nil
		case <-tick.C:
		case <-extend:
			s.extendIfAlive(&failing)
		}
	}
	tick.Stop()
	st := "READY=1"
	if s.Status != nil {
		st += "\nSTATUS=" + oneLine(s.Status())
	}
	s.send(st)
	if s.Watchdog <= 0 {
		<-ctx.Done()
		return nil
	}
	// Half the interval, as sd_watchdog_enabled(3) recommends, so one late
	// tick does not fire the watchdog.
	pet := time.NewTicker(s.Watchdog / 2)
	defer pet.Stop()
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

// extendIfAlive extends the start timeout by one watchdog interval when
// every probe passes, with the start status.
func (s *Supervisor) extendIfAlive(failing *string) {
	if !s.alive(failing) {
		return
	}
	msg := "EXTEND_TIMEOUT_USEC=" + strconv.FormatInt(s.Watchdog.Microseconds(), 10)
	if s.StartStatus != nil {
		msg += "\nSTATUS=" + oneLine(s.StartStatus())
	}
	s.send(msg)
}

// petIfAlive pings the watchdog when every probe passes.
func (s *Supervisor) petIfAlive(failing *string) {
	if s.alive(failing) {
		s.send("WATCHDOG=1")
	}
}

// alive reports whether every probe passes. failing remembers which loops
// were last reported stuck, so a stuck loop is logged once, not at each
// tick.
func (s *Supervisor) alive(failing *string) bool {
	now := time.Now
	if s.Now != nil {
		now = s.Now
	}
	t := now()
	var bad, names []string
	for _, p := range s.Probes {
		if err := p.Check(t); err != nil {
			bad = append(bad, p.Name+": "+err.Error())
			names = append(names, p.Name)
		}
	}
	if len(bad) > 0 {
		// Reported when the set of stuck loops changes, not every tick.
		if key := strings.Join(names, ","); key != *failing {
			msg := strings.Join(bad, "; ")
			s.log().Error("main loop stuck; no longer petting the systemd watchdog", "err", msg, "watchdog", s.Watchdog)
			s.send("STATUS=stuck: " + oneLine(msg))
			*failing = key
		}
		return false
	}
	if *failing != "" {
		s.log().Info("main loops healthy again; petting the systemd watchdog")
		*failing = ""
	}
	return true
}

func (s *Supervisor) send(state string) {
	var n Notifier = SocketNotifier{}
	if s.Notifier != nil {
		n = s.Notifier
	}
	if err := n.Notify(state); err != nil {
		s.log().Warn("notify systemd", "state", strings.SplitN(state, "\n", 2)[0], "err", err)
	}
}

func (s *Supervisor) log() *slog.Logger {
	if s.Log == nil {
		return slog.New(slog.DiscardHandler)
	}
	return s.Log
}

// oneLine keeps a status on its line: a newline would start another
// assignment in the notify message.
func oneLine(s string) string { return strings.ReplaceAll(s, "\n", " ") }
