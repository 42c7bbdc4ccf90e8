package rtc

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/doorbell/intercom/callengine"
	"github.com/doorbell/intercom/callengine/group"
	"github.com/doorbell/intercom/internal/runloop"
)

// TypeEncryption is the state event that turns end-to-end encryption on
// in a room (Matrix spec, m.room.encryption).
const TypeEncryption = "m.room.encryption"

// Transport is the Matrix session as MatrixRTC ringing uses it;
// matrix.Session implements it, tests use an in-memory fake.
type Transport interface {
	// PutState sets a state event and returns its event ID.
	PutState(ctx context.Context, room callengine.RoomID, eventType, stateKey string, content any) (string, error)
	// SendEvent sends a room event and returns its event ID.
	SendEvent(ctx context.Context, room callengine.RoomID, eventType string, content any) (string, error)
	// SendEncryptedToDevices sends content Olm-encrypted to every device
	// in to (user → device IDs) in one request (media keys: never in the
	// clear). The error names the devices it could not reach; the others
	// got the event.
	SendEncryptedToDevices(ctx context.Context, eventType string, to map[callengine.UserID][]string, content any) error
}

// SFU connects the intercom to rooms' SFUs. The daemon's gets a LiveKit
// token for the room's call and joins as a publisher of the door's camera
// and microphone; tests use a fake.
type SFU interface {
	// Join connects to room's SFU. keys is nil in an unencrypted room;
	// in an encrypted one the connection encrypts every frame it sends
	// with the intercom's current key and decrypts each participant's
	// with theirs (it must send nothing before the first own key, which
	// keys holds before Join is called). presence reports remote participants
	// (LiveKit identity "<user>:<device>") arriving and leaving; lost
	// reports the connection ending by itself (nil: no reason given).
	// Both must not block. Closing the returned Closer leaves the SFU.
	// ctx ends when the runner no longer wants the connection; Join may
	// still return one, which the runner then closes.
	Join(ctx context.Context, room callengine.RoomID, keys *CallKeys, presence func(identity string, present bool), lost func(error)) (io.Closer, error)
	// Subscribe connects to the SFU behind another member's transport
	// (serviceURL) for room's call without publishing (multisfu.go): it
	// reports presence and plays their audio, decrypted with keys when
	// set, and is otherwise as Join.
	Subscribe(ctx context.Context, room callengine.RoomID, serviceURL string, keys *CallKeys, presence func(identity string, present bool), lost func(error)) (io.Closer, error)
}

// RunnerConfig configures a Runner.
type RunnerConfig struct {
	Machine Config
	// Household returns the rooms rung as a group (the household room),
	// read at each ring; nil or empty: none.
	Household func() []callengine.RoomID
	// MediaEncryption: the intercom can take part in encrypted rooms'
	// calls (Olm for the media keys, frame encryption on the SFU
	// connection). Without it encrypted rooms are left to classic calls.
	MediaEncryption bool
	// AfterFunc schedules the machine's timers; time.AfterFunc by default
	// (tests run under testing/synctest, whose clock it follows).
	AfterFunc runloop.AfterFunc
	Logger    *slog.Logger
}

// Runner runs MatrixRTC ringing (matrixrtc.enabled): the pure Machine on
// one goroutine (Run), its Matrix sends on one ordered sender per room (a
// ring must follow its membership, a clear the join; rooms do not wait
// for each other), its SFU connections joined off the loop.
//
// It is the matrixrtc path's ring.Line: the ring coordinator rings it
// alongside the other paths and withdraws it when another answers. Every
// other method only enqueues work or reads a snapshot, so it is safe from
// any goroutine, including the sync loop's hooks and SFU callbacks.
type Runner struct {
	cfg RunnerConfig
	t   Transport
	sfu SFU
	log *slog.Logger

	inbox runloop.Queue[item]
	beat  runloop.Heartbeat // Run went round (the watchdog reads it)
	// stopped counts the times the ring was told to stop (withdrawn, hung
	// up, ended). A ring notification queued behind other sends checks it
	// when its turn comes, so a ring taken elsewhere meanwhile never
	// leaves (it would reach the resident after the answer).
	stopped atomic.Uint64
	ring    *runloop.Latest[callengine.Status] // the ring's view of status

	mu     sync.Mutex
	status Status // the machine's last status
	// out is closed while no ring is on its way (RingsOut); asked
	// counts rings handed in that the loop has not taken yet.
	out   chan struct{}
	asked int
	// roomOut are the rooms whose ring is on its way (RingOut): made by
	// Ring before it returns, so a classic invite for the same room that
	// is sent a moment later already finds it; closed with RingsOut's
	// rule, room by room.
	roomOut map[callengine.RoomID]chan struct{}
	// encrypted rooms: their calls' media are end-to-end encrypted, or,
	// without RunnerConfig.MediaEncryption, they are left to classic
	// calls (Element Call would refuse plain media there).
	encrypted map[callengine.RoomID]bool
}

// item is one input of the machine; sfu is set with a successful
// SFUChanged, whose connection the loop takes over. An item with rung
// set is the loop's own: stop waiting for that room's ring (RingsOutMax).
type item struct {
	ev   Event
	sfu  io.Closer
	rung callengine.RoomID
	// join is the SFU connection attempt an SFUChanged or
	// RemoteSFUChanged comes from (sfuJoin.id); 0 for other items.
	join uint64
}

// sfuJoin is one attempt at an SFU connection, from JoinSFU (or
// JoinRemoteSFU) to its leave. A room left and rung again before the
// first attempt came back has two under way: only the latest counts.
type sfuJoin struct {
	cancel context.CancelFunc
	id     uint64
}

// RingsOutMax bounds how long RingsOut waits for a room's ring, when the
// ring never reports (stopped before its turn, a membership that does not
// come back): the notices held for it must still go out.
const RingsOutMax = time.Second

// timerRingOut is the runner's own timer kind (the machine's are
// TimerRing…TimerPresence): RingsOutMax for one room.
const timerRingOut TimerKind = 100

// NewRunner returns a runner; nothing runs until Run.
func NewRunner(cfg RunnerConfig, t Transport, sfu SFU) *Runner {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	r := &Runner{cfg: cfg, t: t, sfu: sfu, log: cfg.Logger, encrypted: map[callengine.RoomID]bool{}, roomOut: map[callengine.RoomID]chan struct{}{},
		status: Status{Phase: PhaseIdle, Rooms: []RoomStatus{}}}
	r.ring = runloop.NewLatest(ringStatus(r.status))
	r.out = make(chan struct{})
	close(r.out)
	r.beat.Beat() // alive from the start, so a watchdog probe before Run passes
	return r
}

func (r *Runner) push(it item) { r.inbox.Push(it) }

// HandleState takes a state event from the sync loop: a call membership
// (TypeMember) of any room, or a room's TypeEncryption. It never blocks.
func (r *Runner) HandleState(e callengine.StateEvent) {
	if e.Type == TypeEncryption {
		var c struct {
			Algorithm string `json:"algorithm"`
		}
		if json.Unmarshal(e.Content, &c) == nil && c.Algorithm != "" {
			r.mu.Lock()
			if !r.encrypted[e.Room] && !r.cfg.MediaEncryption {
				r.log.Warn("room is end-to-end encrypted but encryption is off here, so it is rung with classic calls only", "room_id", e.Room)
			}
			r.encrypted[e.Room] = true
			r.mu.Unlock()
		}
		return
	}
	r.push(item{ev: MemberChanged{Room: e.Room, Event: group.MemberEventOf(e)}})
}

// HandleRoomEvent takes a room event from the sync loop; declines
// (TypeDecline) reach the machine, other types are dropped. It never
// blocks.
func (r *Runner) HandleRoomEvent(e callengine.RoomEvent) {
	if e.Type != TypeDecline {
		return
	}
	r.push(item{ev: DeclineReceived{Room: e.Room, Sender: e.Sender, Content: e.Content}})
}

// HandleToDevice takes a to-device event from the sync loop: media keys
// (TypeEncryptionKeys) that arrived Olm-encrypted from sender's device
// reach the machine; anything else is dropped, a key in the clear with a
// log line. It never blocks.
func (r *Runner) HandleToDevice(sender callengine.UserID, device, eventType string, content []byte, encrypted bool) {
	if eventType != TypeEncryptionKeys {
		return
	}
	if !encrypted {
		r.log.Warn("media key ignored: it came in the clear", "user_id", sender)
		return
	}
	mk, err := DecodeEncryptionKeys(sender, device, content)
	if err != nil {
		r.log.Warn("media key ignored", "user_id", sender, "device_id", device, "err", err)
		return
	}
	r.push(item{ev: MediaKeyReceived{Key: mk}})
}

// Ring rings the residents' rooms (and the household room); encrypted
// ones only with RunnerConfig.MediaEncryption. ErrNoRooms if there is
// none.
func (r *Runner) Ring(_ context.Context, residents []callengine.Resident) error {
	var targets []Target
	all := make([]callengine.UserID, 0, len(residents))
	r.mu.Lock()
	add := func(t Target) {
		t.Encrypted = r.encrypted[t.Room]
		if !t.Encrypted || r.cfg.MediaEncryption {
			targets = append(targets, t)
		}
	}
	for _, res := range residents {
		all = append(all, res.User)
		add(Target{Room: res.Room, Residents: []callengine.UserID{res.User}})
	}
	if r.cfg.Household != nil {
		for _, room := range r.cfg.Household() {
			add(Target{Room: room, Residents: all, Group: true})
		}
	}
	if len(targets) > 0 {
		r.asked++
		select {
		case <-r.out:
			r.out = make(chan struct{})
		default:
		}
		for _, t := range targets {
			if r.roomOut[t.Room] == nil {
				r.roomOut[t.Room] = make(chan struct{})
			}
		}
	}
	r.mu.Unlock()
	if len(targets) == 0 {
		return ErrNoRooms
	}
	r.push(item{ev: RingRequested{Targets: targets}})
	return nil
}

// RingsOut is closed once no ring of the press is still on its way to the
// homeserver: every room's ring has left, failed, or was given up (at
// most RingsOutMax after the press). The daemon holds the ring notices
// until then: the homeserver takes a room's events one after another, so
// a notice and a snapshot sent at the press into the same room made the
// ring wait for them.
func (r *Runner) RingsOut() <-chan struct{} {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.out
}

// RingOut is closed once room's ring of the press has left, failed, or
// was given up (RingsOutMax), and is closed at once for a room that
// MatrixRTC does not ring. The homeserver takes a room's events one after
// another, so the classic invite into a room rung both ways waits for it:
// otherwise the invite (and its candidates) went ahead of the membership
// and the ring, which Element X residents are waiting for (issue 18).
func (r *Runner) RingOut(room callengine.RoomID) <-chan struct{} {
	r.mu.Lock()
	defer r.mu.Unlock()
	if c := r.roomOut[room]; c != nil {
		return c
	}
	c := make(chan struct{})
	close(c)
	return c
}

// Withdraw: the ring was answered on another path.
func (r *Runner) Withdraw() { r.stopped.Add(1); r.push(item{ev: AnsweredElsewhere{}}) }

// Hangup leaves every MatrixRTC call.
func (r *Runner) Hangup() { r.stopped.Add(1); r.push(item{ev: HangupRequested{}}) }

// Status is the MatrixRTC calls as the ring sees them: each rung room a
// call leg, connected once a resident joined it.
func (r *Runner) Status() callengine.Status { return r.ring.Get() }

// Subscribe delivers the ring's view of every change.
func (r *Runner) Subscribe() (<-chan callengine.Status, func()) { return r.ring.Subscribe() }

// MachineStatus is the machine's last status, for /api/status.
func (r *Runner) MachineStatus() Status {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.status
}

// ringStatus maps the machine's status onto call legs (so the notices
// see an answer and the door sees a connected call).
func ringStatus(st Status) callengine.Status {
	out := callengine.Status{Phase: callengine.Phase(st.Phase), Since: st.Since, Calls: []callengine.CallStatus{}}
	if st.Phase == "" {
		out.Phase = callengine.PhaseIdle
	}
	for _, room := range st.Rooms {
		leg := callengine.CallStatus{CallID: callengine.CallID("matrixrtc:" + string(room.Room)), Room: room.Room,
			State: callengine.LegRinging, Since: st.Since, Direction: "outbound"}
		if room.Answered {
			leg.State = callengine.LegConnected
			leg.Resident = callengine.UserID(userOfIdentity(st.AnsweredBy))
		}
		out.Calls = append(out.Calls, leg)
	}
	return out
}

// userOfIdentity takes the user from a "<user>:<device>" identity.
func userOfIdentity(identity string) string {
	if i := strings.LastIndexByte(identity, ':'); i > 0 {
		return identity[:i]
	}
	return identity
}

// Run runs the machine until ctx ends, then leaves every call: the
// memberships are cleared with a context that outlives ctx, every SFU
// connection is closed, and Run returns once every goroutine it started
// has ended.
func (r *Runner) Run(ctx context.Context) error {
	l := &loop{r: r, m: New(r.cfg.Machine), ctx: ctx, sfus: map[callengine.RoomID]io.Closer{},
		sfuCtx: map[callengine.RoomID]sfuJoin{}, keys: map[callengine.RoomID]*CallKeys{},
		remote: map[remoteKey]io.Closer{}, remoteCtx: map[remoteKey]sfuJoin{}, timers: runloop.NewTimers[TimerID](r.cfg.AfterFunc),
		bg: runloop.NewGroup(ctx), sends: map[callengine.RoomID]*runloop.Sender{}, unrung: map[callengine.RoomID]bool{}}
	r.log.Info("MatrixRTC ringing ready", "identity", r.cfg.Machine.Self.Identity(), "service_url", r.cfg.Machine.ServiceURL)
	defer l.shutdown()
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

// Heartbeat is when Run last went round: at least every
// runloop.HeartbeatEvery while it runs, unless a step is stuck.
func (r *Runner) Heartbeat() time.Time { return r.beat.Last() }

// loop is the state Run's goroutine owns.
type loop struct {
	r      *Runner
	m      *Machine
	ctx    context.Context
	sfus   map[callengine.RoomID]io.Closer
	sfuCtx map[callengine.RoomID]sfuJoin   // from JoinSFU to LeaveSFU
	keys   map[callengine.RoomID]*CallKeys // encrypted rooms, from the first key to LeaveSFU
	// remote and remoteCtx are the subscribe-only connections to other
	// members' SFUs (multisfu.go), from JoinRemoteSFU to LeaveRemoteSFU.
	remote    map[remoteKey]io.Closer
	remoteCtx map[remoteKey]sfuJoin
	joins     uint64 // sfuJoin ids given so far
	timers    *runloop.Timers[TimerID]
	bg        *runloop.Group // SFU joins and closes, the senders
	// sends are the rooms' ordered send queues, made at a room's first
	// send and kept while Run runs (one per room ever rung: the residents'
	// rooms and the household room). Per room, because the homeserver
	// takes each room's events in order anyway, and one queue for all
	// made the second room's ring wait for the first room's requests.
	sends map[callengine.RoomID]*runloop.Sender
	// unrung are the rooms rung whose ring has not left yet (RingsOut).
	unrung map[callengine.RoomID]bool
}

// sender is room's send queue.
func (l *loop) sender(room callengine.RoomID) *runloop.Sender {
	s := l.sends[room]
	if s == nil {
		s = &runloop.Sender{}
		l.sends[room] = s
		l.bg.Go(s.Run)
	}
	return s
}

// settleOut closes RingsOut once no ring is on its way: none handed in
// and not taken (took: this step took one), none waiting to leave (a
// room whose ring has yet to leave).
func (l *loop) settleOut(took bool) {
	r := l.r
	r.mu.Lock()
	defer r.mu.Unlock()
	if took {
		r.asked--
	}
	if r.asked == 0 {
		// Every ring handed in has been taken: a room whose ring is
		// not on its way (left, failed, never rung: no membership was
		// due) is out.
		for room, c := range r.roomOut {
			if !l.unrung[room] {
				close(c)
				delete(r.roomOut, room)
			}
		}
	}
	if r.asked == 0 && len(l.unrung) == 0 {
		select {
		case <-r.out:
		default:
			close(r.out)
		}
	}
}

// rung: room's ring has left, failed, or is no longer waited for.
func (l *loop) rung(room callengine.RoomID) {
	delete(l.unrung, room)
	l.timers.Stop(TimerID{Kind: timerRingOut, Room: room})
}

// shutdown leaves every call, then stops everything the loop started.
func (l *loop) shutdown() {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(l.ctx), 5*time.Second)
	defer cancel()
	l.step(item{ev: HangupRequested{}})
	// The rooms' leaves go out in parallel, each after what its room
	// still had queued.
	var wg sync.WaitGroup
	for room, s := range l.sends {
		wg.Go(func() {
			if err := s.Flush(ctx); err != nil {
				l.r.log.Warn("leave MatrixRTC call", "room_id", room, "err", err)
			}
		})
	}
	wg.Wait()
	l.timers.StopAll()
	for room, j := range l.sfuCtx {
		delete(l.sfuCtx, room)
		j.cancel()
	}
	for room, c := range l.sfus {
		delete(l.sfus, room)
		_ = c.Close()
	}
	for k, j := range l.remoteCtx {
		delete(l.remoteCtx, k)
		j.cancel()
	}
	for k, c := range l.remote {
		delete(l.remote, k)
		_ = c.Close()
	}
	l.bg.Stop()
	l.r.mu.Lock()
	for room, c := range l.r.roomOut {
		close(c)
		delete(l.r.roomOut, room)
	}
	l.r.mu.Unlock()
	// Connections that came up while shutting down arrived in the inbox.
	for _, it := range l.r.inbox.Take() {
		if it.sfu != nil {
			_ = it.sfu.Close()
		}
	}
}

// closeStale closes a connection nobody wants any more, off the loop.
func (l *loop) closeStale(c io.Closer) {
	if c != nil {
		l.bg.Go(func(context.Context) { _ = c.Close() })
	}
}

// newJoin starts an SFU connection attempt under a context of its own.
func (l *loop) newJoin() (context.Context, sfuJoin) {
	ctx, cancel := context.WithCancel(l.ctx)
	l.joins++
	return ctx, sfuJoin{cancel: cancel, id: l.joins}
}

// step feeds one input to the machine, executes its effects and
// publishes the status.
func (l *loop) step(it item) {
	r := l.r
	if it.rung != "" {
		l.rung(it.rung)
		l.settleOut(false)
		return
	}
	if e, ok := it.ev.(SFUChanged); ok && it.join != 0 {
		if j, wanted := l.sfuCtx[e.Room]; !wanted || j.id != it.join {
			// Left before the connection was up, or an earlier
			// attempt: its connection (open, or it would leak) and
			// its failure or loss belong to no call.
			l.closeStale(it.sfu)
			return
		}
		if it.sfu != nil {
			l.sfus[e.Room] = it.sfu
		}
	}
	if e, ok := it.ev.(RemoteSFUChanged); ok && it.join != 0 {
		k := remoteKey{e.Room, e.ServiceURL}
		if j, wanted := l.remoteCtx[k]; !wanted || j.id != it.join {
			l.closeStale(it.sfu)
			return
		}
		if it.sfu != nil {
			l.remote[k] = it.sfu
		}
	}
	for _, eff := range l.m.Step(time.Now(), it.ev) {
		l.execute(eff)
	}
	if e, ok := it.ev.(NotificationSent); ok {
		l.rung(e.Room)
	}
	st := l.m.Status()
	r.mu.Lock()
	r.status = st
	r.mu.Unlock()
	_, took := it.ev.(RingRequested)
	l.settleOut(took)
	r.ring.Publish(ringStatus(st))
}

func (l *loop) execute(eff Effect) {
	r := l.r
	switch e := eff.(type) {
	case PublishMembership:
		l.sender(e.Room).Add(func(ctx context.Context) {
			start := time.Now()
			id, err := r.t.PutState(ctx, e.Room, TypeMember, e.StateKey, e.Content)
			if err != nil {
				r.log.Error("publish call membership", "room_id", e.Room, "err", err)
			} else {
				logSent(r.log, "call membership sent", e.Room, id, start)
			}
			r.push(item{ev: MembershipSent{Room: e.Room, EventID: id, Err: err}})
		})
	case ClearMembership:
		l.sender(e.Room).Add(func(ctx context.Context) {
			if _, err := r.t.PutState(ctx, e.Room, TypeMember, e.StateKey, struct{}{}); err != nil {
				r.log.Error("clear call membership", "room_id", e.Room, "err", err)
			}
		})
	case SendNotification:
		ring := r.stopped.Load()
		l.sender(e.Room).Add(func(ctx context.Context) {
			if r.stopped.Load() != ring {
				r.log.Debug("MatrixRTC ring not sent: stopped before its turn", "room_id", e.Room)
				return
			}
			start := time.Now()
			id, err := r.t.SendEvent(ctx, e.Room, TypeNotification, e.Content)
			if err != nil {
				r.log.Error("send MatrixRTC ring", "room_id", e.Room, "err", err)
			} else {
				logSent(r.log, "MatrixRTC ring sent", e.Room, id, start)
			}
			r.push(item{ev: NotificationSent{Room: e.Room, EventID: id, Err: err}})
		})
	case JoinSFU:
		// The connection lives until LeaveSFU cancels this context. It
		// starts at once, in parallel with the membership and the ring:
		// started after the ring instead (tried for issue 18) it did not
		// make the ring measurably quicker, and a resident who answered
		// at once waited for the door's video.
		jctx, j := l.newJoin()
		if old, ok := l.sfuCtx[e.Room]; ok {
			old.cancel()
		}
		l.sfuCtx[e.Room] = j
		room := e.Room
		keys := l.keys[room]
		l.bg.Go(func(context.Context) { l.joinSFU(jctx, j.id, room, keys) })
		// JoinSFU comes once per room rung, with its first membership:
		// its ring is on its way from now (RingsOut).
		l.unrung[room] = true
		l.timers.Start(TimerID{Kind: timerRingOut, Room: room}, RingsOutMax, func() { r.push(item{rung: room}) })
	case LeaveSFU:
		delete(l.keys, e.Room)
		l.rung(e.Room)
		if j, ok := l.sfuCtx[e.Room]; ok {
			j.cancel()
			delete(l.sfuCtx, e.Room)
		}
		if c := l.sfus[e.Room]; c != nil {
			delete(l.sfus, e.Room)
			l.bg.Go(func(context.Context) { _ = c.Close() })
		}
	case JoinRemoteSFU:
		k := remoteKey{e.Room, e.ServiceURL}
		ctx, j := l.newJoin()
		if old, ok := l.remoteCtx[k]; ok {
			old.cancel()
		}
		l.remoteCtx[k] = j
		keys := l.keys[e.Room]
		l.bg.Go(func(context.Context) { l.joinRemote(ctx, j.id, e.Room, e.ServiceURL, keys) })
	case LeaveRemoteSFU:
		k := remoteKey{e.Room, e.ServiceURL}
		if j, ok := l.remoteCtx[k]; ok {
			j.cancel()
			delete(l.remoteCtx, k)
		}
		if c := l.remote[k]; c != nil {
			delete(l.remote, k)
			l.bg.Go(func(context.Context) { _ = c.Close() })
		}
	case UseMediaKey:
		l.callKeys(e.Room).Add(KeyUpdate{Own: true, Index: e.Index, Key: e.Key})
		r.log.Debug("media key in use", "room_id", e.Room, "index", e.Index)
	case RemoteMediaKey:
		l.callKeys(e.Room).Add(KeyUpdate{Identity: e.Identity, Index: e.Index, Key: e.Key})
		r.log.Debug("media key received", "room_id", e.Room, "identity", e.Identity, "index", e.Index)
	case ShareMediaKey:
		content := NewEncryptionKeys(r.cfg.Machine.Self, e.Room, e.Index, e.Key, time.Now())
		to := map[callengine.UserID][]string{}
		for _, d := range e.To {
			to[d.User] = append(to[d.User], d.DeviceID)
		}
		l.sender(e.Room).Add(func(ctx context.Context) {
			if err := r.t.SendEncryptedToDevices(ctx, TypeEncryptionKeys, to, content); err != nil {
				r.log.Error("share media key", "room_id", e.Room, "index", e.Index, "devices", len(e.To), "err", err)
				return
			}
			r.log.Debug("media key shared", "room_id", e.Room, "index", e.Index, "devices", len(e.To))
		})
	case StartTimer:
		id := e.ID
		l.timers.Start(id, e.After, func() { r.push(item{ev: TimerFired{ID: id}}) })
	case StopTimer:
		l.timers.Stop(e.ID)
	case Answered:
		// The ring coordinator sees the answer in the status and
		// withdraws the other paths.
		r.log.Info("MatrixRTC call answered", "room_id", e.Room, "by", e.By.Identity())
	case Ended:
		r.stopped.Add(1)
		r.log.Info("MatrixRTC calls ended", "reason", e.Reason)
	case Ignored:
		r.log.Info("MatrixRTC event ignored", "room_id", e.Room, "user_id", e.Sender, "what", e.What, "reason", e.Reason)
	case PhaseChanged:
		r.log.Info("MatrixRTC state", "state", e.Phase)
	}
}

// callKeys is room's key store, made at its first key.
func (l *loop) callKeys(room callengine.RoomID) *CallKeys {
	k := l.keys[room]
	if k == nil {
		k = &CallKeys{}
		l.keys[room] = k
	}
	return k
}

// joinSFU connects to room's SFU; the outcome, presence and loss come
// back through the inbox.
func (l *loop) joinSFU(ctx context.Context, join uint64, room callengine.RoomID, keys *CallKeys) {
	l.connect(join, room, "SFU",
		func(presence func(string, bool), lost func(error)) (io.Closer, error) {
			return l.r.sfu.Join(ctx, room, keys, presence, lost)
		},
		func(connected bool, err error) Event { return SFUChanged{Room: room, Connected: connected, Err: err} })
}

// connect runs one SFU connection off the loop (the room's own, or
// another member's in multisfu.go): presence and loss, then the outcome
// as the event changed makes, all through the inbox; a connection that
// came up travels with its event, for the loop to keep or close.
func (l *loop) connect(join uint64, room callengine.RoomID, what string, dial func(presence func(string, bool), lost func(error)) (io.Closer, error), changed func(connected bool, err error) Event) {
	r := l.r
	presence := func(identity string, present bool) {
		r.push(item{ev: ParticipantChanged{Room: room, Identity: identity, Present: present}})
	}
	lost := func(err error) {
		if err == nil {
			err = errSFUClosed
		}
		r.log.Warn(what+" connection lost", "room_id", room, "err", err)
		r.push(item{ev: changed(false, err), join: join})
	}
	c, err := dial(presence, lost)
	if err != nil {
		r.log.Error("join "+what, "room_id", room, "err", err)
		r.push(item{ev: changed(false, err), join: join})
		return
	}
	r.push(item{ev: changed(true, nil), sfu: c, join: join})
}

// logSent logs, at debug level, a request of the ring that the homeserver
// took: when it left and how long the homeserver took to answer, so that
// press → ring splits into the intercom's share and the homeserver's
// (BenchmarkMatrixRTC reads these lines).
func logSent(log *slog.Logger, msg string, room callengine.RoomID, eventID string, start time.Time) {
	log.Debug(msg, "room_id", room, "event_id", eventID,
		"sent_at", start.UTC().Format(time.RFC3339Nano), "took", time.Since(start))
}
