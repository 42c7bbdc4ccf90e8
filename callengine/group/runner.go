package group

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"log/slog"
	"sync"
	"time"

	"github.com/doorbell/intercom/callengine"
	"github.com/doorbell/intercom/internal/runloop"
)

// Transport is the Matrix session as the household call uses it;
// matrix.Session implements it, tests use an in-memory fake.
type Transport interface {
	// UserID and DeviceID are the intercom's. Run reads them when it
	// starts: the device is known only after login.
	UserID() callengine.UserID
	DeviceID() string
	// PutState sets a state event and returns its event ID.
	PutState(ctx context.Context, room callengine.RoomID, eventType, stateKey string, content any) (string, error)
	// SendEvent sends a room event and returns its event ID.
	SendEvent(ctx context.Context, room callengine.RoomID, eventType string, content any) (string, error)
	// SendToDevice sends a to-device event to one device.
	SendToDevice(ctx context.Context, eventType string, user callengine.UserID, device string, content any) error
	// RoomStateEvents reads room's current state of the given types (and
	// m.room.member).
	RoomStateEvents(ctx context.Context, room callengine.RoomID, types ...string) ([]callengine.StateEvent, error)
}

// RunnerConfig configures a Runner.
type RunnerConfig struct {
	// JoinRoom finds the household room, creating it if need be, and
	// joins it. Run retries it until it succeeds or its context ends.
	JoinRoom func(ctx context.Context) (callengine.RoomID, error)
	// RingTimeout overrides DefaultConfig's when positive.
	RingTimeout time.Duration
	// LiveView is Config.LiveView: users whose devices joining the call
	// make the intercom join without a ring.
	LiveView map[callengine.UserID]bool
	// MaxDevicesPerUser and MaxCalls override DefaultConfig's when
	// positive (household.max_devices_per_user, household.max_calls).
	MaxDevicesPerUser int
	MaxCalls          int
	// SessionID is this run's membershipID; empty means a new random one.
	SessionID string
	// AfterFunc schedules the machine's timers; time.AfterFunc by default
	// (tests run under testing/synctest, whose clock it follows).
	AfterFunc runloop.AfterFunc
	Logger    *slog.Logger
}

// Runner runs the household room's group call (household.group_call:
// mesh): the pure Machine on one goroutine (Run), its Matrix and WebRTC
// effects executed around it. Membership, ring and to-device sends leave
// in order on one sender goroutine (dart-sdk does not reorder by seq).
// Every peer comes from the PeerFactory, so all household devices share
// the stream's one encoder.
//
// It is the household path's ring.Line. Every other method only enqueues
// work or reads a snapshot, so it is safe from any goroutine, including
// the sync loop's hooks.
type Runner struct {
	cfg   RunnerConfig
	t     Transport
	peers callengine.PeerFactory
	log   *slog.Logger

	inbox runloop.Queue[item] // the machine's inputs
	sends runloop.Sender      // membership, ring and to-device events, in order
	beat  runloop.Heartbeat   // Run is alive (the watchdog reads it)
	// ring is the ring's view of status (ring.Line).
	ring *runloop.Latest[callengine.Status]

	mu     sync.Mutex
	status Status    // the machine's last status
	since  time.Time // when the ring's view last changed phase
	// lastConnected is when a household device was last seen connected
	// (the notices ask whether a ring was answered here).
	lastConnected time.Time
}

// item is one input of the machine; peer is set with OfferCreated and
// OfferAccepted, whose peers the loop takes over.
type item struct {
	ev   Event
	peer callengine.Peer
}

// NewRunner returns a runner; nothing runs until Run.
func NewRunner(cfg RunnerConfig, t Transport, peers callengine.PeerFactory) *Runner {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.SessionID == "" {
		cfg.SessionID = newSessionID()
	}
	r := &Runner{cfg: cfg, t: t, peers: peers, log: cfg.Logger,
		ring: runloop.NewLatest(ringStatus(Status{}, time.Time{}))}
	r.beat.Beat() // alive from the start, so a watchdog probe before Run passes
	return r
}

// newSessionID is the intercom's membershipID for this run: 16 random
// bytes, unpadded URL-safe base64 (dart-sdk also uses a random base64
// session ID per app start).
func newSessionID() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}

func (r *Runner) push(it item) { r.inbox.Push(it) }

// HandleState takes a state event of the household room from the sync
// loop: a membership (TypeMember, TypeElementCallMember) or an
// m.room.member change. It never blocks.
func (r *Runner) HandleState(e callengine.StateEvent) { r.push(item{ev: stateEvent(e)}) }

// HandleToDevice takes a to-device event from the sync loop, raw and
// untrusted. It never blocks.
func (r *Runner) HandleToDevice(sender callengine.UserID, eventType string, content json.RawMessage) {
	r.push(item{ev: ToDeviceReceived{Sender: sender, Type: eventType, Content: content}})
}

// stateEvent turns a state event into the machine's event.
func stateEvent(e callengine.StateEvent) Event {
	if e.Type == "m.room.member" {
		var c struct {
			Membership string `json:"membership"`
		}
		_ = json.Unmarshal(e.Content, &c)
		return RoomMemberChanged{User: callengine.UserID(e.StateKey), Membership: c.Membership}
	}
	return MemberChanged{Event: MemberEventOf(e)}
}

// MemberEventOf is the membership state event e as the decoders take it.
func MemberEventOf(e callengine.StateEvent) MemberEvent {
	return MemberEvent{Type: e.Type, StateKey: e.StateKey, Sender: e.Sender, Content: e.Content,
		Timestamp: e.Timestamp, EventID: e.ID}
}

// Ring rings the household call: the intercom joins it and rings the
// room (MSC4075). The residents are not needed: every member is rung.
func (r *Runner) Ring(context.Context, []callengine.Resident) error {
	r.push(item{ev: RingRequested{}})
	return nil
}

// Withdraw: the ring was answered on another path.
func (r *Runner) Withdraw() { r.push(item{ev: AnsweredElsewhere{}}) }

// Hangup leaves the household call.
func (r *Runner) Hangup() { r.push(item{ev: LeaveRequested{}}) }

// Status is the household call as the ring sees it.
func (r *Runner) Status() callengine.Status { return r.ring.Get() }

// Subscribe delivers the ring's view of every change.
func (r *Runner) Subscribe() (<-chan callengine.Status, func()) { return r.ring.Subscribe() }

// MachineStatus is the household call's last status, for /api/status.
func (r *Runner) MachineStatus() Status {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.status
}

// Rooms is the household room once it is joined, for the ring and
// missed-visitor notices; none before.
func (r *Runner) Rooms() []callengine.RoomID {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.status.Room == "" {
		return nil
	}
	return []callengine.RoomID{r.status.Room}
}

// AnsweredSince reports whether a household device has been connected to
// the door at or after t: a ring a household device took is not a missed
// visitor, even if no resident answered the 1:1 call.
func (r *Runner) AnsweredSince(t time.Time) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.status.Phase == PhaseInCall || (!r.lastConnected.IsZero() && !r.lastConnected.Before(t))
}

// ringStatus maps the group call's status onto the ring: a live view is
// no ring (a press may ring over it), an open ring rings, a device
// connected by a ring is a call. Every device's call is a leg.
func ringStatus(st Status, since time.Time) callengine.Status {
	out := callengine.Status{Phase: callengine.PhaseIdle, Since: since, Calls: []callengine.CallStatus{}}
	switch {
	case st.Rung:
		out.Phase = callengine.PhaseRinging
	case st.LiveView:
	case st.Phase == PhaseInCall:
		out.Phase = callengine.PhaseInCall
	case st.Phase == PhaseRinging:
		out.Phase = callengine.PhaseRinging
	}
	for _, c := range st.Calls {
		leg := callengine.CallStatus{CallID: c.CallID, Room: st.Room, Resident: c.User, State: callengine.LegRinging,
			Since: since, Direction: "outbound"}
		if !c.Outbound {
			leg.Direction = "inbound"
		}
		switch c.State {
		case string(legConnected), string(legHeld):
			leg.State = callengine.LegConnected
		case string(legConnecting):
			leg.State = callengine.LegAnswered
		case string(legAnswering), string(legAccepting):
			leg.State = callengine.LegAnswering
		}
		out.Calls = append(out.Calls, leg)
	}
	return out
}

// retryBackoff spaces the attempts to join the room and read its state.
var retryBackoff = runloop.Backoff{Base: time.Second, Max: 30 * time.Second}

// retry runs op until it succeeds or ctx ends, every failure retried
// (runloop.RetryAll): without the room there is no group call.
func (r *Runner) retry(ctx context.Context, what string, op func() error) error {
	b := retryBackoff
	return runloop.RetryAll(ctx, &b, op, func(err error, wait time.Duration) {
		r.log.Warn(what+" failed; retrying", "err", err, "in", wait)
	})
}

// Heartbeat is when Run last showed it is alive: at least every
// runloop.HeartbeatEvery, while it waits for the room and while its loop
// runs, unless a step is stuck.
func (r *Runner) Heartbeat() time.Time { return r.beat.Last() }

// Run joins the household room, reads its memberships and runs the
// machine until ctx ends. On the way out it leaves the call, closes every
// peer and waits for every goroutine it started.
func (r *Runner) Run(ctx context.Context) error {
	// Joining the room and reading its state wait out a homeserver
	// outage: alive, not stuck, so the heartbeat goes on meanwhile.
	stopWaitBeat := r.beat.BeatUntil()
	defer func() {
		if stopWaitBeat != nil {
			stopWaitBeat()
		}
	}()
	var room callengine.RoomID
	if err := r.retry(ctx, "household room", func() (err error) {
		room, err = r.cfg.JoinRoom(ctx)
		return err
	}); err != nil {
		return nil // ctx ended
	}
	self := Device{User: r.t.UserID(), DeviceID: r.t.DeviceID()}
	mcfg := DefaultConfig(self, r.cfg.SessionID, room)
	if r.cfg.RingTimeout > 0 {
		mcfg.RingTimeout = r.cfg.RingTimeout
	}
	mcfg.LiveView = r.cfg.LiveView
	if r.cfg.MaxDevicesPerUser > 0 {
		mcfg.MaxDevicesPerUser = r.cfg.MaxDevicesPerUser
	}
	if r.cfg.MaxCalls > 0 {
		mcfg.MaxCalls = r.cfg.MaxCalls
	}
	m := New(mcfg)
	r.mu.Lock()
	r.status = m.Status(time.Now()) // the room, for Rooms, before any event
	r.mu.Unlock()
	r.log.Info("household group call ready", "room_id", room, "session_id", mcfg.SessionID, "device_id", self.DeviceID,
		"max_devices_per_user", mcfg.MaxDevicesPerUser, "max_calls", mcfg.MaxCalls)
	var state []callengine.StateEvent
	if err := r.retry(ctx, "read household room state", func() (err error) {
		state, err = r.t.RoomStateEvents(ctx, room, TypeMember, TypeElementCallMember)
		return err
	}); err != nil {
		return nil
	}
	l := &loop{r: r, m: m, ctx: ctx, peers: map[callengine.CallID]callengine.Peer{},
		timers: runloop.NewTimers[TimerID](r.cfg.AfterFunc), bg: runloop.NewGroup(ctx)}
	l.bg.Go(r.sends.Run) // dart-sdk does not reorder by seq: send in order
	defer l.shutdown()
	for _, e := range state {
		l.step(item{ev: stateEvent(e)})
	}
	stopWaitBeat()
	stopWaitBeat = nil
	tick := time.NewTicker(runloop.HeartbeatEvery)
	defer tick.Stop()
	for {
		r.beat.Beat()
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
			continue
		case <-r.inbox.Wait():
		}
		for _, it := range r.inbox.Take() {
			l.step(it)
		}
	}
}

// loop is the state Run's goroutine owns.
type loop struct {
	r      *Runner
	m      *Machine
	ctx    context.Context // Run's; at shutdown one that outlives it
	peers  map[callengine.CallID]callengine.Peer
	timers *runloop.Timers[TimerID]
	bg     *runloop.Group // peer creation and closing, the sender
}

// shutdown leaves the call and clears the membership, then stops
// everything the loop started.
func (l *loop) shutdown() {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(l.ctx), 5*time.Second)
	defer cancel()
	l.ctx = ctx
	l.step(item{ev: LeaveRequested{}})
	if err := l.r.sends.Flush(ctx); err != nil {
		l.r.log.Warn("leave the household call", "err", err)
	}
	l.timers.StopAll()
	for id, p := range l.peers {
		delete(l.peers, id)
		_ = p.Close()
	}
	l.bg.Stop()
	// Peers made while shutting down arrived in the inbox.
	for _, it := range l.r.inbox.Take() {
		if it.peer != nil {
			_ = it.peer.Close()
		}
	}
}

// step feeds one input to the machine, executes its effects (feeding
// back the outcome of the quick ones first) and publishes the status.
func (l *loop) step(it item) {
	r := l.r
	queue := []item{it}
	for len(queue) > 0 {
		it := queue[0]
		queue = queue[1:]
		switch e := it.ev.(type) {
		case OfferCreated:
			if it.peer != nil {
				l.peers[e.CallID] = it.peer
			}
		case OfferAccepted:
			if it.peer != nil {
				l.peers[e.CallID] = it.peer
			}
		}
		now := time.Now()
		for _, eff := range l.m.Step(now, it.ev) {
			if next := l.execute(eff); next != nil {
				queue = append(queue, item{ev: next})
			}
		}
		st := l.m.Status(now)
		r.mu.Lock()
		r.status = st
		if st.Phase == PhaseInCall {
			r.lastConnected = now
		}
		rs := ringStatus(st, r.since)
		if rs.Phase != r.ring.Get().Phase {
			r.since = now
			rs.Since = now
		}
		r.mu.Unlock()
		r.ring.Publish(rs)
	}
}

// room is the household room, which is also the call's conf_id.
func (l *loop) room() callengine.RoomID { return callengine.RoomID(l.m.ConfID()) }

// execute runs one effect. Quick peer operations run here and return
// their outcome; slow ones (making peers) and requests run elsewhere and
// report through the inbox.
func (l *loop) execute(eff Effect) Event {
	r := l.r
	switch e := eff.(type) {
	case PublishMembership:
		room := l.room()
		r.sends.Add(func(ctx context.Context) {
			id, err := r.t.PutState(ctx, room, TypeMember, e.StateKey, e.Content)
			if err != nil {
				r.log.Error("publish household membership", "err", err)
			}
			r.push(item{ev: MembershipPublished{EventID: id, Err: err}})
		})
	case SendNotification:
		room := l.room()
		r.sends.Add(func(ctx context.Context) {
			if _, err := r.t.SendEvent(ctx, room, TypeRTCNotification, e.Content); err != nil {
				r.log.Error("send ring notification", "err", err)
			}
		})
	case SendToDevice:
		r.sends.Add(func(ctx context.Context) {
			if err := r.t.SendToDevice(ctx, e.Type, e.To.User, e.To.DeviceID, e.Content); err != nil {
				r.log.Warn("send to-device call event", "call_id", e.CallID, "type", e.Type, "err", err)
				r.push(item{ev: SendFailed{CallID: e.CallID, Type: e.Type}})
			}
		})
	case CreateOffer:
		l.bg.Go(func(ctx context.Context) {
			p, err := r.peers.NewPeer(ctx, l.sink(e.CallID))
			ev := OfferCreated{CallID: e.CallID, Err: err}
			if err == nil {
				ev.SDP, ev.StreamID = p.Offer(), p.StreamID()
			}
			r.push(item{ev: ev, peer: p})
		})
	case AcceptOffer:
		l.bg.Go(func(ctx context.Context) {
			p, answer, err := r.peers.AcceptOffer(ctx, e.SDP, l.sink(e.CallID))
			ev := OfferAccepted{CallID: e.CallID, SDP: answer, Err: err}
			if err == nil {
				ev.StreamID = p.StreamID()
			}
			r.push(item{ev: ev, peer: p})
		})
	case ApplyAnswer:
		err := errNoPeer
		if p := l.peers[e.CallID]; p != nil {
			err = p.SetAnswer(e.SDP)
		}
		return AnswerApplied{CallID: e.CallID, Err: err}
	case AnswerNegotiation:
		if p := l.peers[e.CallID]; p != nil {
			sdp, err := p.AnswerOffer(e.SDP)
			return NegotiationAnswered{CallID: e.CallID, SDP: sdp, Err: err}
		}
	case RestartICE:
		err := errNoPeer
		if p := l.peers[e.CallID]; p != nil {
			var sdp string
			if sdp, err = p.RestartICE(); err == nil {
				r.log.Info("household call: restarting ICE", "call_id", e.CallID)
				return RestartOffered{CallID: e.CallID, SDP: sdp}
			}
		}
		return RestartOffered{CallID: e.CallID, Err: err}
	case ApplyRestartAnswer:
		err := errNoPeer
		if p := l.peers[e.CallID]; p != nil {
			err = p.SetAnswer(e.SDP)
		}
		return RestartAnswerApplied{CallID: e.CallID, Err: err}
	case ApplyCandidates:
		if p := l.peers[e.CallID]; p != nil {
			if err := p.AddCandidates(e.Candidates); err != nil {
				r.log.Debug("add household candidates", "call_id", e.CallID, "err", err)
			}
		}
	case ClosePeer:
		if p := l.peers[e.CallID]; p != nil {
			delete(l.peers, e.CallID)
			// pion's Close waits for its goroutines; keep the loop
			// responsive.
			l.bg.Go(func(context.Context) { _ = p.Close() })
		}
	case StartTimer:
		id := e.ID
		l.timers.Start(id, e.After, func() { r.push(item{ev: TimerFired{ID: id}}) })
	case StopTimer:
		l.timers.Stop(e.ID)
	case Ignored:
		level := slog.LevelInfo
		if e.Quiet {
			level = slog.LevelDebug
		}
		r.log.Log(context.Background(), level, "household event ignored", "user_id", e.Sender, "type", e.Type, "reason", e.Reason)
	case PhaseChanged:
		r.log.Info("household call", "state", e.Phase)
	}
	return nil
}

// sink turns a peer's events into machine events.
func (l *loop) sink(id callengine.CallID) func(callengine.PeerEvent) {
	return func(pe callengine.PeerEvent) {
		switch {
		case pe.Candidate != nil:
			l.r.push(item{ev: LocalCandidates{CallID: id, Candidates: []callengine.Candidate{*pe.Candidate}}})
		case pe.State != nil:
			l.r.push(item{ev: PeerChanged{CallID: id, State: *pe.State}})
		}
	}
}
