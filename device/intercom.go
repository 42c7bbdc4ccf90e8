package device

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"time"

	"github.com/doorbell/intercom/callengine"
	"github.com/doorbell/intercom/internal/runloop"
)

// Caller rings residents; callengine.Engine implements it.
type Caller interface {
	Ring(ctx context.Context, residents []callengine.Resident) error
	Hangup()
	Status() callengine.Status
	Subscribe() (<-chan callengine.Status, func())
}

// Ringer sounds the bell while residents are being rung; gpio.Ringer
// implements it.
type Ringer interface {
	Set(ringing bool)
	Ringing() bool
	Output() bool
}

// Relay is the door strike; gpio.Relay implements it.
type Relay interface {
	Energised() bool
	Halt() error
}

// Reporter contributes a named section to the status document (Matrix sync
// health, media counters). Healthy decides /healthz.
type Reporter interface {
	Healthy() bool
	Report() any
}

// Directory says whom to ring and where. It is asked at every press, so
// rooms created or repaired while running are used at once.
type Directory func() []callengine.Resident

// Config holds the intercom's parts.
type Config struct {
	Caller    Caller
	Ringer    Ringer
	Relay     Relay
	Residents Directory
	// Sync is the Matrix session's health; /healthz is 200 only while it
	// is healthy.
	Sync Reporter
	// Media reports media counters (encoders, audio from the resident).
	Media Reporter
	// Door opens the door on residents' commands (door.go); Notices posts
	// ring and missed-visitor notices (notices.go). Both may be nil.
	Door    *Door
	Notices *Notices
	Logger  *slog.Logger

	// Snapshot serves GET /api/snapshot.jpg; may be nil (404).
	Snapshot Snapshotter

	// Heartbeat is how often Run reports that it is alive while idle
	// (default DefaultHeartbeat); see Heartbeat.
	Heartbeat time.Duration

	// LocalRing is how long the bell rings after a press that reached
	// nobody (issue 15): when the ring could not be placed, or ended with
	// every call failed to send (unknown_error, the homeserver away), the
	// visitor still hears the bell for the whole ring timeout, as at a
	// door with no network at all. 0: the bell follows the ring alone.
	LocalRing time.Duration
}

// Intercom is the doorbell's state machine around the call engine.
type Intercom struct {
	cfg     Config
	log     *slog.Logger
	presses chan string
	hangups chan struct{} // Hangup to Run: the local ring ends
	events  *broadcaster
	beat    runloop.Heartbeat

	mu        sync.Mutex
	pressN    uint64
	lastPress time.Time
	started   time.Time
}

// New returns an intercom; nothing runs until Run.
func New(cfg Config) *Intercom {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Heartbeat <= 0 {
		cfg.Heartbeat = DefaultHeartbeat
	}
	d := &Intercom{cfg: cfg, log: cfg.Logger, presses: make(chan string, 8), hangups: make(chan struct{}, 1),
		events: newBroadcaster(), started: time.Now()}
	d.beat.Beat()
	d.attachDoor()
	return d
}

// Heartbeat is when Run last went round its loop: at least every
// Config.Heartbeat while it runs, unless it is stuck (in a press the call
// engine never answers, for one).
func (d *Intercom) Heartbeat() time.Time { return d.beat.Last() }

// Press records a doorbell press from source ("gpio", "api"). It never
// blocks: presses beyond a small backlog are dropped, which is what a
// visitor hammering the button means anyway.
func (d *Intercom) Press(source string) bool {
	select {
	case d.presses <- source:
		return true
	default:
		d.log.Info("press dropped: backlog full", "source", source)
		return false
	}
}

// Run handles presses and follows the call engine until ctx is done. It
// returns with the ringer silenced and the relay de-energised.
func (d *Intercom) Run(ctx context.Context) error {
	updates, unsubscribe := d.cfg.Caller.Subscribe()
	defer unsubscribe()
	defer d.safeState()
	last := d.cfg.Caller.Status().Phase
	tick := time.NewTicker(d.cfg.Heartbeat)
	defer tick.Stop()
	// The local ring: until localUntil the bell rings although the ring
	// reached nobody; localEnd wakes the loop when it is over.
	var localUntil time.Time
	localEnd := time.NewTimer(time.Hour)
	localEnd.Stop()
	defer localEnd.Stop()
	bell := func(st callengine.Status) {
		if d.cfg.Ringer == nil {
			return
		}
		local := time.Now().Before(localUntil) && unreached(st)
		d.cfg.Ringer.Set(st.Phase == callengine.PhaseRinging || local)
	}
	for {
		d.beat.Beat()
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		case <-localEnd.C:
			bell(d.cfg.Caller.Status())
		case <-d.hangups:
			localUntil = time.Time{}
			bell(d.cfg.Caller.Status())
		case src := <-d.presses:
			if d.press(ctx, src) && d.cfg.LocalRing > 0 {
				localUntil = time.Now().Add(d.cfg.LocalRing)
				localEnd.Reset(d.cfg.LocalRing)
			}
			bell(d.cfg.Caller.Status())
		case st := <-updates:
			bell(st)
			d.follow(st)
			if st.Phase != last {
				d.log.Info("intercom state", "state", st.Phase, "was", last)
				last = st.Phase
			}
			d.events.publish("status", d.Status())
		}
	}
}

// press rings the residents; it reports whether this press is a new
// visitor (not one during a call already going on).
func (d *Intercom) press(ctx context.Context, src string) bool {
	d.mu.Lock()
	d.pressN++
	d.lastPress = time.Now()
	d.mu.Unlock()
	d.events.publish("press", map[string]any{"source": src, "time": time.Now()})
	residents := d.cfg.Residents()
	err := d.cfg.Caller.Ring(ctx, residents)
	switch {
	case err == nil:
		d.log.Info("ringing residents", "source", src, "residents", len(residents))
	case errors.Is(err, callengine.ErrBusy):
		d.log.Info("press while a call is active", "source", src)
		return false
	default:
		d.log.Error("ring residents", "source", src, "err", err)
		d.events.publish("error", map[string]any{"error": err.Error()})
	}
	return true
}

// unreached reports whether st is the end of a ring that reached nobody:
// idle, with no call, or with every call ended by unknown_error (its
// invite could not be sent). A ring a resident answered, rejected or let
// time out is not.
func unreached(st callengine.Status) bool {
	if st.Phase == callengine.PhaseInCall {
		return false
	}
	if st.Phase == callengine.PhaseRinging {
		return true
	}
	for _, c := range st.Calls {
		if c.Reason != callengine.ReasonUnknownError {
			return false
		}
	}
	return true
}

func (d *Intercom) safeState() {
	if d.cfg.Ringer != nil {
		d.cfg.Ringer.Set(false)
	}
	if d.cfg.Relay != nil {
		if err := d.cfg.Relay.Halt(); err != nil {
			d.log.Error("relay halt", "err", err)
		}
	}
}

// Hangup ends the current call or ring, and the bell's local ring.
func (d *Intercom) Hangup() {
	select {
	case d.hangups <- struct{}{}:
	default: // one is pending already
	}
	d.cfg.Caller.Hangup()
}

// Healthy reports whether the Matrix sync is working.
func (d *Intercom) Healthy() bool { return d.cfg.Sync == nil || d.cfg.Sync.Healthy() }

// Status is the document served at /api/status.
type Status struct {
	State     callengine.Phase        `json:"state"`
	Since     time.Time               `json:"since"`
	Calls     []callengine.CallStatus `json:"calls"`
	Ringer    RingerStatus            `json:"ringer"`
	Relay     RelayStatus             `json:"relay"`
	Matrix    any                     `json:"matrix,omitempty"`
	Media     any                     `json:"media,omitempty"`
	Healthy   bool                    `json:"healthy"`
	Presses   uint64                  `json:"presses"`
	LastPress *time.Time              `json:"last_press,omitempty"`
	Started   time.Time               `json:"started"`
	Process   ProcessStatus           `json:"process"`
}

// RingerStatus is the ringer part of Status.
type RingerStatus struct {
	Ringing bool `json:"ringing"`
	Output  bool `json:"output"`
}

// RelayStatus is the relay part of Status.
type RelayStatus struct {
	Energised bool        `json:"energised"`
	Door      *DoorStatus `json:"door,omitempty"`
}

// Status returns the current status document.
func (d *Intercom) Status() Status {
	cs := d.cfg.Caller.Status()
	s := Status{State: cs.Phase, Since: cs.Since, Calls: cs.Calls, Healthy: d.Healthy(), Started: d.started, Process: processStatus()}
	if s.Calls == nil {
		s.Calls = []callengine.CallStatus{}
	}
	if d.cfg.Ringer != nil {
		s.Ringer = RingerStatus{Ringing: d.cfg.Ringer.Ringing(), Output: d.cfg.Ringer.Output()}
	}
	if d.cfg.Relay != nil {
		s.Relay.Energised = d.cfg.Relay.Energised()
	}
	if d.cfg.Door != nil {
		ds := d.cfg.Door.Status()
		s.Relay.Door = &ds
	}
	if d.cfg.Sync != nil {
		s.Matrix = d.cfg.Sync.Report()
	}
	if d.cfg.Media != nil {
		s.Media = d.cfg.Media.Report()
	}
	d.mu.Lock()
	s.Presses = d.pressN
	if !d.lastPress.IsZero() {
		lp := d.lastPress
		s.LastPress = &lp
	}
	d.mu.Unlock()
	return s
}
