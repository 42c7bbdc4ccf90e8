package device

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"sync/atomic"
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
	// Caller rings the residents. It may be nil until the Matrix side is
	// up (Attach): the door works before and without it, a press then
	// rings the bell alone and is kept as a missed visitor.
	Caller    Caller
	Ringer    Ringer
	Relay     Relay
	Residents Directory
	// Sync is the Matrix session's health; /healthz is 200 only while it
	// is healthy.
	Sync Reporter
	// Media reports media counters (encoders, audio from the resident).
	Media Reporter
	// MQTT reports the home-automation publisher; nil without one.
	MQTT Reporter
	// Door opens the door on residents' commands (door.go); Notices posts
	// ring and missed-visitor notices (notices.go). Both may be nil.
	Door    *Door
	Notices *Notices
	Logger  *slog.Logger

	// Snapshot serves GET /api/snapshot.jpg; may be nil (404).
	Snapshot Snapshotter

	// History keeps the last visitors (/api/history); may be nil.
	History *History
	// OnEvent, if set, sees every event of /api/events as it is
	// published, on the publisher's goroutine (the metrics follow the
	// door through it). It must not block.
	OnEvent func(Event)

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
	attach  chan struct{} // Attach to Run: subscribe to the new caller
	caller  atomic.Pointer[callerBox]
	events  *broadcaster
	beat    runloop.Heartbeat
	rings   ringTracker // Run's

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
		attach: make(chan struct{}, 1), events: newBroadcaster(cfg.OnEvent), started: time.Now()}
	if cfg.Caller != nil {
		d.caller.Store(&callerBox{cfg.Caller})
	}
	d.beat.Beat()
	d.attachDoor()
	return d
}

// callerBox lets an interface value live in an atomic.Pointer.
type callerBox struct{ Caller }

// ErrNotConnected is a press's ring before there is a Caller: the
// intercom has not reached the homeserver since it started.
var ErrNotConnected = errors.New("not connected to the homeserver yet")

// Attach gives the intercom its Caller once the Matrix side is up; the
// next press rings the residents, and so does a visitor whose bell is
// still ringing. It may be called once, before or while Run runs.
func (d *Intercom) Attach(c Caller) {
	d.caller.Store(&callerBox{c})
	select {
	case d.attach <- struct{}{}:
	default:
	}
}

// callerNow is the Caller, nil before Attach.
func (d *Intercom) callerNow() Caller {
	if b := d.caller.Load(); b != nil {
		return b.Caller
	}
	return nil
}

// CallStatus is the Caller's status (the merged one of every path);
// idle before there is a Caller.
func (d *Intercom) CallStatus() callengine.Status { return d.callStatus() }

// callStatus is the Caller's status; idle without one.
func (d *Intercom) callStatus() callengine.Status {
	if c := d.callerNow(); c != nil {
		return c.Status()
	}
	return callengine.Status{Phase: callengine.PhaseIdle, Since: d.started}
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
	var updates <-chan callengine.Status
	unsubscribe := func() {}
	defer func() { unsubscribe() }()
	subscribe := func() {
		if c := d.callerNow(); c != nil && updates == nil {
			updates, unsubscribe = c.Subscribe()
		}
	}
	subscribe()
	defer d.safeState()
	last := d.callStatus().Phase
	tick := time.NewTicker(d.cfg.Heartbeat)
	defer tick.Stop()
	// The visitor whose bell rings locally because the residents could
	// not be rung: until v.until the bell rings, and while it does the
	// residents are rung as soon as the homeserver answers again.
	var v *visit
	localEnd := time.NewTimer(time.Hour)
	localEnd.Stop()
	defer localEnd.Stop()
	// retry polls for the homeserver's return while a visitor waits.
	retry := time.NewTicker(visitRetryPoll)
	retry.Stop()
	defer retry.Stop()
	bell := func(st callengine.Status) {
		if d.cfg.Ringer == nil {
			return
		}
		local := v != nil && time.Now().Before(v.until) && unreached(st)
		d.cfg.Ringer.Set(st.Phase == callengine.PhaseRinging || local)
	}
	for {
		d.beat.Beat()
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		case <-d.attach:
			subscribe()
			if v != nil {
				d.retryVisit(ctx, v, false)
			}
		case <-retry.C:
			if v == nil || !v.waiting() {
				retry.Stop()
				break
			}
			d.retryVisit(ctx, v, false)
			bell(d.callStatus())
		case <-localEnd.C:
			if v != nil && !time.Now().Before(v.until) {
				retry.Stop()
				if !v.ringing {
					v = nil // else its ring still has to be settled
				}
			}
			bell(d.callStatus())
		case <-d.hangups:
			if v != nil {
				v.until = time.Time{}
				v = nil
				retry.Stop()
			}
			bell(d.callStatus())
		case src := <-d.presses:
			now := time.Now()
			if v != nil && v.waiting() && now.Before(v.until) {
				// The same visitor pressing again while the bell
				// still rings for them: one visitor, one notice; the
				// bell rings on from this press, and the residents
				// are tried again at once.
				d.countPress(src)
				v.until = now.Add(d.cfg.LocalRing)
				localEnd.Reset(d.cfg.LocalRing)
				if v.recorded && d.cfg.Notices != nil {
					d.cfg.Notices.Hold(v.at, v.until) // told of when this bell stops
				}
				v.next = time.Time{}
				d.retryVisit(ctx, v, true)
				bell(d.callStatus())
				break
			}
			nv := &visit{at: now, until: now.Add(d.cfg.LocalRing)}
			nv.placing(d.callStatus())
			placed, visitor := d.press(ctx, src, now)
			if visitor {
				// Without a local ring (LocalRing 0) the visitor is
				// still followed, to keep them as missed if nobody
				// could be rung, but not retried.
				v = nv
				if d.cfg.LocalRing > 0 {
					localEnd.Reset(d.cfg.LocalRing)
				}
				v.ringing = placed
				d.settleVisit(v, d.callStatus())
				if v.waiting() {
					retry.Reset(visitRetryPoll)
				}
			}
			bell(d.callStatus())
		case st := <-updates:
			if v != nil {
				d.settleVisit(v, st)
				switch {
				case !time.Now().Before(v.until) && !v.ringing:
					v = nil // its bell has stopped: no more tries
				case v.waiting():
					retry.Reset(visitRetryPoll)
				}
			}
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

// visitRetryPoll is how often a visitor whose ring reached nobody checks
// whether the residents can be rung again: the homeserver's return must
// ring them within a second or so (issue 15 allows 5 s end to end).
const visitRetryPoll = 200 * time.Millisecond

// visitHoldGrace is added to the ring timeout to hold a kept notice while
// a late ring goes on: the ring's own end comes within the timeout, and
// its end reason a moment later.
const visitHoldGrace = 10 * time.Second

// visit is a visitor whose bell rings locally (Config.LocalRing) because
// the residents could not be rung, and whose residents are rung as soon
// as the homeserver answers while the bell still rings. Run owns it.
type visit struct {
	at    time.Time // the press
	until time.Time // the bell rings locally until then
	// ringing: a ring placed for this visitor goes on; its calls are the
	// first whose IDs are not in before (the coordinator answers Ring
	// before it publishes the new ring's status).
	ringing bool
	before  map[callengine.CallID]bool
	// recorded: the visitor is kept as missed (Notices.Unreached);
	// reached: the residents were rung (withdrawn, no more tries).
	recorded, reached bool
	next              time.Time // no new try before then
	tries             int
}

// waiting: the visitor's residents are still to be rung.
func (v *visit) waiting() bool { return !v.reached && !v.ringing }

// placing notes, before Ring, the calls of the caller's status st (an
// earlier ring's), so that the new ring is told apart.
func (v *visit) placing(st callengine.Status) {
	v.before = map[callengine.CallID]bool{}
	for _, c := range st.Calls {
		v.before[c.CallID] = true
	}
}

// settleVisit follows the visitor's ring to its end: a ring that reached
// nobody keeps the visitor as missed (once), one that reached a resident
// (answered, rejected, timed out) withdraws that and ends the tries.
func (d *Intercom) settleVisit(v *visit, st callengine.Status) {
	if v.ringing {
		ours := len(st.Calls) > 0 && !v.before[st.Calls[0].CallID]
		if !ours || st.Phase == callengine.PhaseRinging {
			return // still ringing, or a status from before the ring
		}
		v.ringing = false
		if v.recorded && unreached(st) {
			// Nobody again: the kept notice goes when the bell stops.
			if d.cfg.Notices != nil {
				d.cfg.Notices.Hold(v.at, v.until)
			}
			return
		}
		if !unreached(st) {
			v.reached = true
			if v.recorded && d.cfg.Notices != nil {
				d.cfg.Notices.Reached(v.at)
			}
			if v.tries > 0 {
				d.log.Info("visitor's residents rung after all", "rang_at", v.at, "tries", v.tries)
			}
			return
		}
	}
	if !v.reached && !v.recorded {
		v.recorded = true
		if d.cfg.Notices != nil {
			d.cfg.Notices.Unreached(v.at, v.until)
		}
	}
}

// retryVisit rings v's residents again if they may be reachable now: a
// Caller, the homeserver answering (unless pressed: the visitor pressing
// again is always worth a try), no ring going on, and at most one try per
// second or few (a homeserver that answers /sync but refuses the invites
// is not hammered).
func (d *Intercom) retryVisit(ctx context.Context, v *visit, pressed bool) {
	c := d.callerNow()
	now := time.Now()
	if c == nil || !v.waiting() || !now.Before(v.until) || now.Before(v.next) || !pressed && !d.Healthy() ||
		c.Status().Phase != callengine.PhaseIdle {
		return
	}
	v.tries++
	v.next = now.Add(min(time.Duration(v.tries)*time.Second, 4*time.Second))
	residents := d.cfg.Residents()
	v.placing(c.Status())
	if d.cfg.Notices != nil {
		d.cfg.Notices.RingFor(v.at)
	}
	d.ringPlacing(v.at, time.Time{})
	err := c.Ring(ctx, residents)
	d.ringPlaced(err)
	if err != nil {
		if d.cfg.Notices != nil {
			d.cfg.Notices.RingFor(time.Time{}) // no ring: not the next one's time
		}
		d.log.Warn("ring the waiting visitor's residents", "rang_at", v.at, "try", v.tries, "err", err)
		return
	}
	d.log.Info("homeserver answering again: ringing the residents for the visitor at the door", "rang_at", v.at, "try", v.tries, "residents", len(residents))
	v.ringing = true
	if v.recorded && d.cfg.Notices != nil {
		// Not told of while the ring may reach them: withdrawn if it
		// does, released if it does not, delivered after this at the
		// latest should the intercom stop meanwhile.
		d.cfg.Notices.Hold(v.at, now.Add(d.cfg.LocalRing+visitHoldGrace))
	}
	d.settleVisit(v, c.Status())
}

// countPress counts a press and tells the event stream.
func (d *Intercom) countPress(src string) {
	d.mu.Lock()
	d.pressN++
	d.lastPress = time.Now()
	d.mu.Unlock()
	d.events.publish("press", PressEvent{Source: src, Time: time.Now()})
}

// press rings the residents for the visitor who pressed at at. placed: the ring was placed; visitor: this
// press is a new visitor (not one during a call already going on).
func (d *Intercom) press(ctx context.Context, src string, at time.Time) (placed, visitor bool) {
	d.countPress(src)
	residents := d.cfg.Residents()
	c := d.callerNow()
	err := ErrNotConnected
	d.ringPlacing(at, at)
	if c != nil {
		err = c.Ring(ctx, residents)
	}
	d.ringPlaced(err)
	switch {
	case err == nil:
		d.log.Info("ringing residents", "source", src, "residents", len(residents))
		return true, true
	case errors.Is(err, callengine.ErrBusy):
		d.log.Info("press while a call is active", "source", src)
		return false, false
	default:
		d.log.Error("ring residents", "source", src, "err", err)
		d.events.publish("error", map[string]any{"error": err.Error()})
	}
	return false, true
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
	if c := d.callerNow(); c != nil {
		c.Hangup()
	}
}

// Healthy reports whether the Matrix sync is working.
func (d *Intercom) Healthy() bool { return d.cfg.Sync == nil || d.cfg.Sync.Healthy() }

// Status is the document served at /api/status.
type Status struct {
	State     callengine.Phase        `json:"state"`
	Since     time.Time               `json:"since"`
	Calls     []callengine.CallStatus `json:"calls"`
	Ring      *callengine.RingInfo    `json:"ring,omitempty"` // the last press's ring: paths, who answered where
	Ringer    RingerStatus            `json:"ringer"`
	Relay     RelayStatus             `json:"relay"`
	Matrix    any                     `json:"matrix,omitempty"`
	Media     any                     `json:"media,omitempty"`
	MQTT      any                     `json:"mqtt,omitempty"`
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
	cs := d.callStatus()
	s := Status{State: cs.Phase, Since: cs.Since, Calls: cs.Calls, Ring: cs.Ring, Healthy: d.Healthy(), Started: d.started, Process: processStatus()}
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
	if d.cfg.MQTT != nil {
		s.MQTT = d.cfg.MQTT.Report()
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
