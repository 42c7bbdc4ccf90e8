package callengine

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"time"

	"github.com/doorbell/intercom/internal/runloop"
)

// Resident is someone the intercom rings, with the direct room it rings
// them in.
type Resident struct {
	User UserID
	Room RoomID
}

// EngineConfig configures an Engine.
type EngineConfig struct {
	Machine Config
	// OwnUser is the intercom's Matrix user; its own events echoed back by
	// sync are dropped.
	OwnUser UserID
	// PoolSize is how many peers with a ready offer are kept so that a
	// press sends its invites at once (typically the number of residents).
	PoolSize int
	// SendTimeout bounds the delivery of one event, retries included.
	SendTimeout time.Duration
	Logger      *slog.Logger
}

// Engine runs the call Machine on one goroutine (Run) and executes its
// effects: it sends signalling through the Transport, drives peers from the
// PeerFactory and keeps timers. Every other method only enqueues work or
// reads a snapshot, so it is safe to call from any goroutine, including
// library callbacks.
type Engine struct {
	cfg       EngineConfig
	transport Transport
	peers     PeerFactory
	log       *slog.Logger

	// inbox holds the loop's inputs: machine Events and the requests
	// below. Its producers (library callbacks, timers, the sync loop)
	// never block on it.
	inbox  runloop.Queue[any]
	status *runloop.Latest[Status]
	beat   runloop.Heartbeat // Run went round (the watchdog reads it)

	stopped chan struct{}
}

// Heartbeat is when Run last went round: at least every
// runloop.HeartbeatEvery while it runs, unless a step is stuck.
func (e *Engine) Heartbeat() time.Time { return e.beat.Last() }

// NewEngine returns an engine; nothing runs until Run.
func NewEngine(cfg EngineConfig, t Transport, pf PeerFactory) *Engine {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.SendTimeout <= 0 {
		cfg.SendTimeout = 15 * time.Second
	}
	if cfg.PoolSize < 0 {
		cfg.PoolSize = 0
	}
	e := &Engine{
		cfg: cfg, transport: t, peers: pf, log: cfg.Logger,
		status:  runloop.NewLatest(Status{Phase: PhaseIdle, Calls: []CallStatus{}}),
		stopped: make(chan struct{}),
	}
	e.beat.Beat() // alive from the start, so a watchdog probe before Run passes
	return e
}

// Work items of the engine's inbox besides machine Events.
type (
	ringRequest struct {
		residents []Resident
		reply     chan error
	}
	peerEvent struct {
		slot int64
		ev   PeerEvent
	}
	// poolReady carries a prepared peer to the run loop, which alone
	// writes slot.peer: shutdown may be closing the slot meanwhile.
	poolReady struct {
		slot *slot
		peer Peer
		err  error
	}
	// ringTimeoutChange is SetRingTimeout's request.
	ringTimeoutChange struct{ d time.Duration }
	// refreshPool is RefreshPool's request.
	refreshPool struct{}
	// inspect runs on the loop's goroutine with the loop's state: the
	// tests read the tables through it, which nothing else may touch.
	inspect func(*runner)
)

// ringingPeer is a Peer that can get its media ready while its call rings
// (media/webrtc starts the video encoder then, so that the answer finds it
// running). Ringing must not block.
type ringingPeer interface{ Ringing() }

// slot is one peer the engine owns, pooled or attached to a call.
type slot struct {
	id     int64
	peer   Peer
	callID CallID
	early  []Candidate // gathered before the slot joined a call
}

// Ring rings every resident at once. It returns when the invites have been
// handed to the transport queue, ErrBusy if a ring or call is active.
func (e *Engine) Ring(ctx context.Context, residents []Resident) error {
	if len(residents) == 0 {
		return ErrNoResidents
	}
	reply := make(chan error, 1)
	e.inbox.Push(ringRequest{residents: residents, reply: reply})
	select {
	case err := <-reply:
		return err
	case <-ctx.Done():
		return ctx.Err()
	case <-e.stopped:
		return ErrStopped
	}
}

// SetRingTimeout changes how long later rings last, and so the lifetime
// of their invites (Matrix spec, VoIP: m.call.invite "lifetime"). It goes
// through the inbox like any other input, so it takes effect between two
// events: a ring already under way keeps the timeout its invites announced,
// and the next ring uses d. d ≤ 0 is ignored. It never blocks.
func (e *Engine) SetRingTimeout(d time.Duration) {
	if d <= 0 {
		return
	}
	e.inbox.Push(ringTimeoutChange{d: d})
}

// RefreshPool replaces the pre-warmed peers, e.g. after the ICE servers
// changed (new TURN credentials): pooled peers keep the servers they were
// made with. Peers already in a call are not touched.
func (e *Engine) RefreshPool() { e.inbox.Push(refreshPool{}) }

// Hangup ends every active call with reason user_hangup.
func (e *Engine) Hangup() { e.inbox.Push(HangupRequested{Reason: ReasonUserHangup}) }

// Withdraw stops a ring that was answered on another path; a call already
// answered here stays (RingWithdrawn). It never blocks.
func (e *Engine) Withdraw() { e.inbox.Push(RingWithdrawn{}) }

// HandleRoomEvent takes a call event from the homeserver. Malformed or
// foreign events are logged and dropped here, before they reach the
// machine. It never blocks.
func (e *Engine) HandleRoomEvent(ev RoomEvent) {
	if ev.Sender == e.cfg.OwnUser {
		return
	}
	content, err := Decode(ev.Type, ev.Content)
	if err != nil {
		level := slog.LevelWarn
		if errors.Is(err, ErrUnknownType) {
			level = slog.LevelDebug
		}
		e.log.Log(context.Background(), level, "ignoring call event", "event_id", ev.ID, "room_id", ev.Room, "sender", ev.Sender, "type", ev.Type, "err", err)
		return
	}
	if inv, ok := content.(*Invite); ok && inv.Invitee != "" && inv.Invitee != e.cfg.OwnUser {
		e.log.Debug("ignoring invite for someone else", "room_id", ev.Room, "call_id", inv.CallID, "invitee", inv.Invitee)
		return
	}
	if a, ok := content.(*Answer); ok {
		// The first steps of answer → first frame (docs/ARCHITECTURE.md,
		// "Answer to first frame"): the homeserver took the answer, our
		// /sync brought it.
		e.log.Debug("call answer received", "call_id", a.CallID, "room_id", ev.Room, "sender", ev.Sender,
			"origin_server_ts", ev.Timestamp, "synced", ev.Received)
	}
	e.inbox.Push(SignalReceived{Room: ev.Room, Sender: ev.Sender, Age: ev.Age, Content: content})
}

// Status returns the latest snapshot of the calls.
func (e *Engine) Status() Status { return e.status.Get() }

// Subscribe returns a channel that receives the latest status after every
// change (older snapshots are dropped if the reader is slow) and a function
// that ends the subscription.
func (e *Engine) Subscribe() (<-chan Status, func()) { return e.status.Subscribe() }

// runner is the state owned by Run's goroutine.
type runner struct {
	e        *Engine
	m        *Machine
	slots    map[int64]*slot
	calls    map[CallID]*slot
	pool     []*slot
	filling  int
	nextSlot int64
	timers   *runloop.Timers[TimerID]
	out      map[CallID]*outbox
	bg       *runloop.Group // peer creation, peer closing and outboxes
	ctx      context.Context
}

// Run owns the machine until ctx is cancelled. On the way out it hangs up
// every active call (best effort, bounded by SendTimeout) and closes every
// peer; it returns once all its goroutines have ended.
func (e *Engine) Run(ctx context.Context) error {
	defer close(e.stopped)
	r := &runner{
		e: e, m: NewMachine(e.cfg.Machine),
		slots: map[int64]*slot{}, calls: map[CallID]*slot{},
		timers: runloop.NewTimers[TimerID](nil), out: map[CallID]*outbox{},
		bg: runloop.NewGroup(ctx), ctx: ctx,
	}
	r.fillPool()
	tick := time.NewTicker(runloop.HeartbeatEvery)
	defer tick.Stop()
	for {
		e.beat.Beat()
		select {
		case <-ctx.Done():
			r.shutdown()
			return nil
		case <-tick.C:
			continue
		case <-e.inbox.Wait():
		}
		for _, item := range e.inbox.Take() {
			r.handle(item)
		}
	}
}

func (r *runner) shutdown() {
	// Calls still up get a hangup; the sends use a fresh context since
	// ctx is already done.
	r.ctx = context.WithoutCancel(r.ctx)
	r.step(HangupRequested{Reason: ReasonUserHangup})
	r.timers.StopAll()
	for _, s := range r.pool {
		r.closePeer(s)
	}
	for _, s := range r.slots {
		r.closePeer(s)
	}
	r.bg.Stop()
	// Peers created while shutting down arrived in the inbox.
	for _, item := range r.e.inbox.Take() {
		if p, ok := item.(poolReady); ok && p.peer != nil {
			_ = p.peer.Close()
		}
		if rr, ok := item.(ringRequest); ok {
			rr.reply <- ErrStopped
		}
	}
}

func (r *runner) handle(item any) {
	switch it := item.(type) {
	case ringRequest:
		it.reply <- r.ring(it.residents)
	case poolReady:
		r.filling--
		if it.err != nil {
			r.e.log.Error("prepare peer", "err", it.err)
			// Retry later rather than spin: the next ring creates one
			// synchronously anyway.
			break
		}
		it.slot.peer = it.peer
		r.pool = append(r.pool, it.slot)
	case peerEvent:
		r.peerEvent(it)
	case refreshPool:
		for _, s := range r.pool {
			r.closePeer(s)
		}
		r.pool = nil
		r.fillPool()
	case ringTimeoutChange:
		// Only ring() reads RingTimeout (the invite lifetime and the ring
		// timer), so a ring in progress is unaffected.
		r.m.cfg.RingTimeout = it.d
		r.e.log.Info("ring timeout changed", "ring_timeout", it.d)
	case Event:
		r.step(it)
	case inspect:
		it(r)
	default:
		r.e.log.Error("callengine: unexpected inbox item", "type", fmt.Sprintf("%T", item))
	}
}

func (r *runner) newSlot() *slot {
	r.nextSlot++
	s := &slot{id: r.nextSlot}
	r.slots[s.id] = s
	return s
}

func (r *runner) sink(id int64) func(PeerEvent) {
	return func(ev PeerEvent) { r.e.inbox.Push(peerEvent{slot: id, ev: ev}) }
}

// fillPool prepares peers in the background until the pool is full.
func (r *runner) fillPool() {
	for len(r.pool)+r.filling < r.e.cfg.PoolSize {
		r.filling++
		s := r.newSlot()
		r.bg.Go(func(ctx context.Context) {
			p, err := r.e.peers.NewPeer(ctx, r.sink(s.id))
			if err != nil {
				r.e.inbox.Push(poolReady{err: err})
				return
			}
			r.e.inbox.Push(poolReady{slot: s, peer: p})
		})
	}
}

func (r *runner) takePeer() (*slot, error) {
	for len(r.pool) > 0 {
		s := r.pool[0]
		r.pool = r.pool[1:]
		if _, alive := r.slots[s.id]; alive {
			return s, nil
		}
	}
	s := r.newSlot()
	p, err := r.e.peers.NewPeer(r.ctx, r.sink(s.id))
	if err != nil {
		delete(r.slots, s.id)
		return nil, fmt.Errorf("prepare peer: %w", err)
	}
	s.peer = p
	return s, nil
}

func (r *runner) ring(residents []Resident) error {
	if r.m.Phase() != PhaseIdle {
		return ErrBusy
	}
	r.pruneOutboxes()
	var legs []LegSpec
	var taken []*slot
	for _, res := range residents {
		s, err := r.takePeer()
		if err != nil {
			// The machine never heard of these calls: nothing else
			// would ever remove them from the table.
			for _, t := range taken {
				delete(r.calls, t.callID)
				r.closePeer(t)
			}
			return err
		}
		s.callID = NewCallID()
		r.calls[s.callID] = s
		taken = append(taken, s)
		legs = append(legs, LegSpec{CallID: s.callID, Room: res.Room, Invitee: res.User, OfferSDP: s.peer.Offer(), StreamID: s.peer.StreamID()})
	}
	r.step(RingRequested{Legs: legs})
	for _, s := range taken {
		if rp, ok := s.peer.(ringingPeer); ok {
			rp.Ringing()
		}
		for _, c := range s.early {
			r.step(LocalCandidate{CallID: s.callID, Candidate: c})
		}
		s.early = nil
	}
	r.fillPool()
	return nil
}

func (r *runner) peerEvent(pe peerEvent) {
	s, ok := r.slots[pe.slot]
	if !ok {
		return
	}
	if s.callID == "" {
		// A pooled peer: keep candidates for when it joins a call, and
		// drop it from the pool if it died.
		if c := pe.ev.Candidate; c != nil {
			s.early = append(s.early, *c)
		}
		if st := pe.ev.State; st != nil && (*st == PeerFailed || *st == PeerClosed) {
			r.closePeer(s)
			r.fillPool()
		}
		return
	}
	if c := pe.ev.Candidate; c != nil {
		r.step(LocalCandidate{CallID: s.callID, Candidate: *c})
	}
	if st := pe.ev.State; st != nil {
		r.step(PeerChanged{CallID: s.callID, State: *st})
	}
}

// step feeds one event to the machine and executes its effects. Effects
// that report back synchronously (ApplyAnswer) feed their outcome in
// before step returns.
func (r *runner) step(ev Event) {
	effects := r.m.Step(time.Now(), ev)
	for _, eff := range effects {
		r.execute(eff)
	}
	r.e.status.Publish(r.m.Status())
}

func (r *runner) execute(eff Effect) {
	log := r.e.log
	switch x := eff.(type) {
	case Send:
		r.outbox(x.CallID).push(r.ctx, x)
	case ApplyAnswer:
		var err error
		t0 := time.Now()
		if s, ok := r.calls[x.CallID]; ok {
			err = s.peer.SetAnswer(x.SDP)
		} else {
			err = errors.New("no peer for call")
		}
		if err != nil {
			log.Warn("resident's answer refused", "call_id", x.CallID, "err", err)
		} else {
			log.Debug("call answer applied", "call_id", x.CallID, "took", time.Since(t0))
		}
		r.step(AnswerApplied{CallID: x.CallID, Err: err})
	case ApplyCandidates:
		if s, ok := r.calls[x.CallID]; ok {
			if err := s.peer.AddCandidates(x.Candidates); err != nil {
				log.Warn("remote candidates refused", "call_id", x.CallID, "err", err)
			}
		}
	case AcceptCall:
		s := r.newSlot()
		s.callID = x.CallID
		p, answer, err := r.e.peers.AcceptOffer(r.ctx, x.OfferSDP, r.sink(s.id))
		stream := ""
		if err != nil {
			delete(r.slots, s.id)
			log.Warn("cannot answer the resident's call", "call_id", x.CallID, "err", err)
		} else {
			s.peer = p
			r.calls[x.CallID] = s
			stream = p.StreamID()
		}
		r.step(CallAccepted{CallID: x.CallID, AnswerSDP: answer, StreamID: stream, Err: err})
	case AnswerOffer:
		var sdp string
		err := errors.New("no peer for call")
		if s, ok := r.calls[x.CallID]; ok {
			sdp, err = s.peer.AnswerOffer(x.SDP)
		}
		r.step(NegotiationAnswered{CallID: x.CallID, SDP: sdp, Err: err})
	case RestartICE:
		var sdp string
		err := errors.New("no peer for call")
		if s, ok := r.calls[x.CallID]; ok {
			sdp, err = s.peer.RestartICE()
		}
		log.Info("restarting ICE", "call_id", x.CallID, "err", err)
		r.step(OfferCreated{CallID: x.CallID, SDP: sdp, Err: err})
	case ApplyRenegotiatedAnswer:
		if s, ok := r.calls[x.CallID]; ok {
			if err := s.peer.SetAnswer(x.SDP); err != nil {
				log.Warn("renegotiated answer refused", "call_id", x.CallID, "err", err)
			}
		}
	case ClosePeer:
		if s, ok := r.calls[x.CallID]; ok {
			delete(r.calls, x.CallID)
			r.closePeer(s)
		}
		// Anything still queued for the call keeps its order in the
		// outbox's goroutine; nothing new is sent for an ended call.
		delete(r.out, x.CallID)
	case StartTimer:
		id := x.Timer
		r.timers.Start(id, x.After, func() { r.e.inbox.Push(TimerFired{Timer: id}) })
	case StopTimer:
		r.timers.Stop(x.Timer)
	case Ignored:
		level := slog.LevelInfo
		if x.Quiet {
			level = slog.LevelDebug
		}
		log.Log(context.Background(), level, "ignoring call event", "room_id", x.Room, "sender", x.Sender, "call_id", x.CallID, "reason", x.Reason)
	case CallEnded:
		log.Info("call ended", "call_id", x.CallID, "resident", x.Invitee, "reason", x.Reason, "by_resident", x.Remote)
	}
}

func (r *runner) closePeer(s *slot) {
	delete(r.slots, s.id)
	if s.peer == nil {
		return
	}
	p := s.peer
	s.peer = nil
	// pion's Close waits for its goroutines; keep the loop responsive.
	r.bg.Go(func(context.Context) {
		if err := p.Close(); err != nil {
			r.e.log.Debug("close peer", "err", err)
		}
	})
}

// pruneOutboxes forgets idle outboxes of calls that were never ours
// (rejected inbound invites), so the map does not grow without bound.
func (r *runner) pruneOutboxes() {
	for id, o := range r.out {
		o.mu.Lock()
		idle := !o.running
		o.mu.Unlock()
		if idle {
			delete(r.out, id)
		}
	}
}

func (r *runner) outbox(id CallID) *outbox {
	o, ok := r.out[id]
	if !ok {
		o = &outbox{r: r}
		r.out[id] = o
	}
	return o
}

// outbox delivers the events of one call in order on its own goroutine,
// so a slow homeserver delays that call only, never the engine loop.
type outbox struct {
	r       *runner
	mu      sync.Mutex
	queue   []queuedSend
	running bool
}

// queuedSend carries the context current when the send was queued: during
// shutdown the final hangups use a context that outlives Run's.
type queuedSend struct {
	ctx context.Context
	Send
}

func (o *outbox) push(ctx context.Context, s Send) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.queue = append(o.queue, queuedSend{ctx: ctx, Send: s})
	if o.running {
		return
	}
	o.running = true
	o.r.bg.Go(func(context.Context) { o.run() })
}

// run sends until the queue is empty. Each send uses the context it was
// queued with, not the group's: the final hangups of a shutdown must
// outlive Run's context.
func (o *outbox) run() {
	for {
		o.mu.Lock()
		if len(o.queue) == 0 {
			o.running = false
			o.mu.Unlock()
			return
		}
		s := o.queue[0]
		o.queue = o.queue[1:]
		o.mu.Unlock()
		sctx, cancel := context.WithTimeout(s.ctx, o.r.e.cfg.SendTimeout)
		err := o.r.e.transport.SendRoomEvent(sctx, s.Room, s.Type, s.Content)
		cancel()
		if err != nil {
			o.r.e.log.Warn("send call event", "call_id", s.CallID, "room_id", s.Room, "type", s.Type, "err", err)
			o.r.e.inbox.Push(SendFailed{CallID: s.CallID, Type: s.Type, Err: err})
		}
	}
}

const callIDAlphabet = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"

// NewCallID returns a call ID in the form js-sdk and famedly's SDK use: the
// time in milliseconds then 16 random characters, so that glare resolution
// (compare call IDs as strings, smaller wins) favours the older call.
func NewCallID() CallID {
	var b [16]byte
	_, _ = rand.Read(b[:])
	out := make([]byte, 16)
	for i, v := range b {
		out[i] = callIDAlphabet[int(v)%len(callIDAlphabet)]
	}
	return CallID(strconv.FormatInt(time.Now().UnixMilli(), 10) + string(out))
}
