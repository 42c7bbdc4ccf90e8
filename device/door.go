package device

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/doorbell/intercom/callengine"
	"github.com/doorbell/intercom/gpio"
	"github.com/doorbell/intercom/internal/atomicfile"
	"github.com/doorbell/intercom/internal/runloop"
)

// PulseRelay is the door strike as the Door drives it; gpio.Relay
// implements it.
type PulseRelay interface {
	Pulse(ctx context.Context, d time.Duration) error
	Halt() error
	Energised() bool
}

// Messenger posts notices into residents' rooms; the Matrix session
// implements it (package matrix: SendText, SendJPEG).
type Messenger interface {
	// SendText posts text; notify makes it a message that notifies
	// (m.text) rather than a quiet notice (m.notice).
	SendText(ctx context.Context, room callengine.RoomID, text string, notify bool) (eventID string, err error)
	// SendJPEG uploads a JPEG image and posts it with body as its text.
	SendJPEG(ctx context.Context, room callengine.RoomID, body, name string, jpeg []byte) (eventID string, err error)
}

// DoorOptions configure a Door.
type DoorOptions struct {
	Policy    DoorConfig
	Relay     PulseRelay
	Messenger Messenger // audit notices and replies; nil: none
	// StateDir keeps door.json (the policy's memory); "" keeps nothing.
	StateDir string
	Logger   *slog.Logger
	// Now is the clock; default time.Now.
	Now func() time.Time
	// Heartbeat is how often Run reports that it is alive while idle
	// (default DefaultHeartbeat); see Door.Heartbeat.
	Heartbeat time.Duration
}

// doorFile is the policy's memory in the state directory.
const doorFile = "door.json"

// sendTimeout bounds one notice.
const sendTimeout = 30 * time.Second

// RelayEvent is one relay change, as /api/events reports it ("relay").
type RelayEvent struct {
	On      bool              `json:"on"`
	At      time.Time         `json:"at"`
	Pulse   time.Duration     `json:"pulse_ns,omitempty"`
	EventID string            `json:"event_id,omitempty"`
	Sender  callengine.UserID `json:"sender,omitempty"`
	Room    callengine.RoomID `json:"room,omitempty"`
	// Received is when the command reached the intercom's sync;
	// LatencyMS the time from then to the relay energising.
	Received  time.Time `json:"received,omitzero"`
	LatencyMS float64   `json:"latency_ms,omitempty"`
	Err       string    `json:"error,omitempty"`
}

// DoorStatus is the door part of the status document.
type DoorStatus struct {
	Energised bool   `json:"energised"`
	Opens     uint64 `json:"opens"`
	Refused   uint64 `json:"refused"`
	// RelayFailures counts pulses the relay failed: not energised, or
	// not released.
	RelayFailures uint64      `json:"relay_failures"`
	LastOn        *time.Time  `json:"last_on,omitempty"`
	LastOff       *time.Time  `json:"last_off,omitempty"`
	LastOpen      *RelayEvent `json:"last_open,omitempty"`
}

// doorMsg is one item of the Door's inbox.
type doorMsg struct {
	req      *DoorRequest
	received time.Time
	notice   string // a ring notice's event ID
	inCall   *bool
	rang     bool
	config   *DoorConfig // SetConfig
}

// pulseOrder is one pulse for the relay goroutine.
type pulseOrder struct {
	d        time.Duration
	req      DoorRequest
	received time.Time
}

// Door opens the door on residents' commands. Its goroutine (Run) owns the
// policy; the relay goroutine it starts owns the strike. Handle and the
// notice hooks only enqueue.
type Door struct {
	opts   DoorOptions
	log    *slog.Logger
	now    func() time.Time
	policy *DoorPolicy
	inbox  runloop.Queue[doorMsg]
	pulses chan pulseOrder
	start  time.Time
	beat   runloop.Heartbeat

	mu      sync.Mutex
	publish func(kind string, data any)
	status  DoorStatus
	cfg     DoorConfig // the policy's, for Config; the policy itself is Run's
}

// NewDoor loads the policy's memory from the state directory and returns
// a Door; nothing runs until Run. The relay is halted at once.
func NewDoor(opts DoorOptions) (*Door, error) {
	if opts.Relay == nil {
		return nil, errors.New("door: no relay")
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Heartbeat <= 0 {
		opts.Heartbeat = DefaultHeartbeat
	}
	d := &Door{
		opts:    opts,
		log:     opts.Logger,
		now:     opts.Now,
		pulses:  make(chan pulseOrder, 1),
		publish: func(string, any) {},
	}
	if err := opts.Relay.Halt(); err != nil {
		return nil, fmt.Errorf("door: halt relay: %w", err)
	}
	mem, err := d.load()
	if err != nil {
		// A broken file costs only the clock-behind protection; the start
		// time rule still holds. Never refuse to start over it.
		d.log.Error("door memory unreadable, starting without it", "path", d.path(), "err", err)
	}
	d.start = d.now()
	d.policy = NewDoorPolicy(opts.Policy, d.start, mem)
	d.cfg = d.policy.Config()
	d.beat.Beat()
	return d, nil
}

// Heartbeat is when Run last went round its loop: at least every
// DoorOptions.Heartbeat while it runs, unless it is stuck.
func (d *Door) Heartbeat() time.Time { return d.beat.Last() }

// Config returns the effective door configuration: the latest one applied
// by SetConfig, defaults filled in.
func (d *Door) Config() DoorConfig {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.cfg
}

// SetConfig replaces the policy's configuration (authorised users, pulse
// length, …) on a reload. It only enqueues: Run applies it between two
// requests, so each request is judged wholly under the old or wholly under
// the new configuration, and the policy's memory (event IDs seen, the last
// pulse) carries over (DoorPolicy.Reconfigure). A pulse already under way
// keeps its length. It never blocks.
func (d *Door) SetConfig(c DoorConfig) { d.inbox.Push(doorMsg{config: &c}) }

// Handle takes a possible door command that reached the sync at received.
// It never blocks.
func (d *Door) Handle(r DoorRequest, received time.Time) {
	d.inbox.Push(doorMsg{req: &r, received: received})
}

// NoticeSent records a ring notice residents may react to.
func (d *Door) NoticeSent(eventID string) { d.inbox.Push(doorMsg{notice: eventID}) }

// callChanged and rang feed the call window (OnlyDuringCall, Window).
func (d *Door) callChanged(inCall bool) { d.inbox.Push(doorMsg{inCall: &inCall}) }
func (d *Door) rang()                   { d.inbox.Push(doorMsg{rang: true}) }

func (d *Door) setPublisher(f func(kind string, data any)) {
	d.mu.Lock()
	d.publish = f
	d.mu.Unlock()
}

func (d *Door) emit(kind string, data any) {
	d.mu.Lock()
	f := d.publish
	d.mu.Unlock()
	f(kind, data)
}

// Status reports the relay and the door's counters.
func (d *Door) Status() DoorStatus {
	d.mu.Lock()
	defer d.mu.Unlock()
	s := d.status
	s.Energised = d.opts.Relay.Energised()
	return s
}

// Run handles commands until ctx is done, and returns with the relay
// de-energised and the policy's memory saved.
func (d *Door) Run(ctx context.Context) error {
	relayDone := make(chan struct{})
	rctx, stopRelay := context.WithCancel(context.WithoutCancel(ctx))
	go func() {
		defer close(relayDone)
		d.runRelay(rctx)
	}()
	defer func() {
		stopRelay()
		<-relayDone
		if err := d.opts.Relay.Halt(); err != nil {
			d.log.Error("relay halt", "err", err)
		}
		d.save()
	}()
	tick := time.NewTicker(d.opts.Heartbeat)
	defer tick.Stop()
	for {
		d.beat.Beat()
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
			continue
		case <-d.inbox.Wait():
		}
		for _, m := range d.inbox.Take() {
			d.step(ctx, m)
		}
	}
}

func (d *Door) step(ctx context.Context, m doorMsg) {
	now := d.now()
	switch {
	case m.notice != "":
		d.policy.NoticeSent(m.notice)
	case m.inCall != nil:
		d.policy.CallChanged(now, *m.inCall)
	case m.rang:
		d.policy.Rang(now)
	case m.config != nil:
		d.policy.Reconfigure(*m.config)
		eff := d.policy.Config()
		d.mu.Lock()
		d.cfg = eff
		d.mu.Unlock()
		d.log.Info("door configuration changed", "pulse", eff.Pulse, "authorized", len(eff.Authorized),
			"only_during_call", eff.OnlyDuringCall, "window", eff.Window)
	case m.req != nil:
		if !m.req.ServerNow.IsZero() {
			at := m.received
			if at.IsZero() {
				at = now
			}
			d.policy.ServerTime(at, m.req.ServerNow)
		}
		d.decide(ctx, now, *m.req, m.received)
	}
}

func (d *Door) decide(ctx context.Context, now time.Time, r DoorRequest, received time.Time) {
	dec := d.policy.Decide(now, r)
	if dec.Verdict == VerdictNotCommand {
		return
	}
	if dec.Verdict == VerdictOpen {
		// The pulse goes out before anything else: the latency that
		// matters is the resident's, and the memory is saved right after.
		select {
		case d.pulses <- pulseOrder{d: dec.Pulse, req: r, received: received}:
		default:
			// Cannot happen while the rate limit is at least one pulse;
			// refusing is the safe side anyway.
			dec.Verdict, dec.Why, dec.Pulse = VerdictRateLimited, "relay busy", 0
		}
	}
	attrs := []any{"verdict", dec.Verdict, "event_id", r.EventID, "room_id", r.Room, "sender", r.Sender,
		"sent", r.Timestamp, "age", r.Age, "reaction", r.Reaction}
	if dec.Why != "" {
		attrs = append(attrs, "why", dec.Why)
	}
	if dec.Verdict == VerdictOpen {
		d.log.Info("door command obeyed", append(attrs, "pulse", dec.Pulse)...)
	} else {
		d.log.Warn("door command refused", attrs...)
		d.mu.Lock()
		d.status.Refused++
		d.mu.Unlock()
	}
	d.emit("door", DoorEvent{Verdict: dec.Verdict, Why: dec.Why, EventID: r.EventID,
		Sender: r.Sender, Room: r.Room, Reaction: r.Reaction})
	if dec.Changed {
		d.save()
	}
	if dec.Reply != "" {
		d.notify(ctx, r.Room, dec.Reply, false)
	}
}

// TestPulse pulses the relay for d at an installer's request (the web
// page's relay test), through the same runner as residents' commands: one
// pulse at a time, reported on and off (/api/events "relay"), the strike
// released by the relay's own bound and halted on exit. It bypasses the
// policy, since the API's guard already decided who may ask, and posts no
// notice. It never blocks: while a pulse is under way it fails with
// ErrRelayBusy.
func (d *Door) TestPulse(dur time.Duration) error {
	select {
	case d.pulses <- pulseOrder{d: dur, req: DoorRequest{EventID: "installer-test"}}:
		d.log.Info("door relay test pulse", "pulse", dur)
		return nil
	default:
		return ErrRelayBusy
	}
}

// runRelay owns the strike: one pulse at a time, each reported on and off.
func (d *Door) runRelay(ctx context.Context) {
	for {
		var o pulseOrder
		select {
		case <-ctx.Done():
			return
		case o = <-d.pulses:
		}
		if d.pulse(ctx, o) {
			d.release(ctx, o.req.Room)
		}
	}
}

// pulse carries out one order and tells the room what the relay did: the
// audit notice only once the strike was energised and released, a loud
// failure notice otherwise. It reports whether the relay may have been left
// energised.
func (d *Door) pulse(ctx context.Context, o pulseOrder) (stuck bool) {
	on := d.now()
	ev := RelayEvent{On: true, At: on, Pulse: o.d, EventID: o.req.EventID, Sender: o.req.Sender, Room: o.req.Room, Received: o.received}
	if !o.received.IsZero() {
		ev.LatencyMS = float64(on.Sub(o.received).Microseconds()) / 1000
	}
	d.mu.Lock()
	prevOn, prevOpen := d.status.LastOn, d.status.LastOpen
	d.status.Opens++
	d.status.LastOn = &on
	last := ev
	d.status.LastOpen = &last
	d.mu.Unlock()
	d.emit("relay", ev)
	err := d.opts.Relay.Pulse(ctx, o.d)
	off := d.now()
	stuck = errors.Is(err, gpio.ErrStillEnergised)
	opened := !errors.Is(err, gpio.ErrNotEnergised) // an unknown failure may have opened
	d.mu.Lock()
	if err != nil {
		d.status.RelayFailures++
	}
	if opened {
		d.status.LastOff = &off
	} else {
		// The strike never came on: not an opening.
		d.status.Opens--
		d.status.LastOn, d.status.LastOpen = prevOn, prevOpen
	}
	d.mu.Unlock()
	offEv := RelayEvent{On: false, At: off, EventID: o.req.EventID}
	if err != nil {
		offEv.Err = err.Error()
		d.log.Error("relay pulse", "event_id", o.req.EventID, "sender", o.req.Sender, "opened", opened, "stuck", stuck, "err", err)
	}
	d.emit("relay", offEv)
	d.log.Info("door relay pulse done", "event_id", o.req.EventID, "on", on, "off", off, "held", off.Sub(on))
	at := on.Format("15:04:05")
	switch {
	case err == nil:
		// The audit notice: who opened, when, for how long (issue 4).
		d.notify(ctx, o.req.Room, fmt.Sprintf("🔓 Door opened by %s at %s for %s.",
			o.req.Sender, at, o.d.Round(100*time.Millisecond)), false)
	case stuck:
		d.notify(ctx, o.req.Room, fmt.Sprintf("⚠️ The door relay could not be switched off (command from %s at %s): "+
			"the strike may still be powered and the door unlocked. The intercom keeps trying to release it.",
			o.req.Sender, at), true)
	case !opened:
		d.notify(ctx, o.req.Room, fmt.Sprintf("⚠️ Door NOT opened for %s at %s: the door relay failed.",
			o.req.Sender, at), true)
	default:
		d.notify(ctx, o.req.Room, fmt.Sprintf("⚠️ The door relay failed (command from %s at %s); the door may not have opened.",
			o.req.Sender, at), true)
	}
	return stuck
}

// releaseRetry is how often the door tries again to release a relay that
// Halt's own retries left energised.
const releaseRetry = 5 * time.Second

// release keeps halting a relay that may still be energised until it is
// off or ctx ends (Run's exit halts it once more, and relay-off after the
// process). Orders that arrive meanwhile are refused, not kept: a command
// must not open the door whenever the relay recovers.
func (d *Door) release(ctx context.Context, room callengine.RoomID) {
	t := time.NewTicker(releaseRetry)
	defer t.Stop()
	for d.opts.Relay.Energised() {
		select {
		case <-ctx.Done():
			return
		case o := <-d.pulses:
			d.log.Error("door command not carried out: relay fault", "event_id", o.req.EventID, "sender", o.req.Sender)
			d.mu.Lock()
			d.status.RelayFailures++
			d.mu.Unlock()
			d.emit("relay", RelayEvent{On: false, At: d.now(), EventID: o.req.EventID, Err: "relay fault: not pulsed"})
			d.notify(ctx, o.req.Room, fmt.Sprintf("⚠️ Door NOT opened for %s: the door relay is faulty.", o.req.Sender), true)
		case <-t.C:
			if err := d.opts.Relay.Halt(); err != nil {
				d.log.Error("relay still not released", "err", err)
				continue
			}
			off := d.now()
			d.mu.Lock()
			d.status.LastOff = &off
			d.mu.Unlock()
			d.emit("relay", RelayEvent{On: false, At: off})
			d.log.Info("relay released")
			d.notify(ctx, room, fmt.Sprintf("✅ Door relay released at %s.", off.Format("15:04:05")), false)
		}
	}
}

// notify posts a notice without holding up the caller; loud makes it one
// that notifies (a failure the resident must see).
func (d *Door) notify(ctx context.Context, room callengine.RoomID, text string, loud bool) {
	if d.opts.Messenger == nil || room == "" {
		return
	}
	go func() {
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), sendTimeout)
		defer cancel()
		if _, err := d.opts.Messenger.SendText(sctx, room, text, loud); err != nil {
			d.log.Warn("door notice", "room_id", room, "err", err)
		}
	}()
}

func (d *Door) path() string { return filepath.Join(d.opts.StateDir, doorFile) }

func (d *Door) load() (DoorMemory, error) {
	var mem DoorMemory
	if d.opts.StateDir == "" {
		return mem, nil
	}
	data, err := os.ReadFile(d.path())
	if errors.Is(err, os.ErrNotExist) {
		return mem, nil
	}
	if err != nil {
		return mem, err
	}
	if err := json.Unmarshal(data, &mem); err != nil {
		return DoorMemory{}, fmt.Errorf("decode %s: %w", d.path(), err)
	}
	return mem, nil
}

func (d *Door) save() {
	if d.opts.StateDir == "" {
		return
	}
	data, err := json.Marshal(d.policy.Memory(d.now()))
	if err == nil {
		// Replaced whole or not at all: a torn file after a power cut
		// would cost the clock-behind protection (see NewDoor).
		err = atomicfile.WriteFile(d.path(), data, 0o600)
	}
	if err != nil {
		d.log.Error("save door memory", "path", d.path(), "err", err)
	}
}
