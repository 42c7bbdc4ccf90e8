package daemon

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/doorbell/intercom/callengine"
	"github.com/doorbell/intercom/callengine/group"
	"github.com/doorbell/intercom/callengine/rtc"
	"github.com/doorbell/intercom/matrix"
)

// sfuJoin connects to one room's SFU with tok and publishes the door's
// camera and microphone. presence reports remote participants arriving
// and leaving; lost reports the connection ending by itself. Closing the
// returned Closer leaves the SFU.
type sfuJoin func(ctx context.Context, tok sfuToken, presence func(identity string, present bool), lost func(error)) (io.Closer, error)

// matrixRTC runs MatrixRTC ringing (matrixrtc.enabled): the pure
// callengine/rtc machine on one goroutine, its Matrix sends on an ordered
// queue, its SFU connections joined off the loop. It is the matrixrtc
// path of the ring coordinator (rtccaller.go), which rings it alongside
// the others and withdraws it when another path answers. A nil
// *matrixRTC (MatrixRTC off) does nothing.
type matrixRTC struct {
	session *matrix.Session
	tokens  tokenSource
	join    sfuJoin
	mcfg    rtc.Config
	// household gives the rooms rung as a group (under mu: set late when
	// Run joins the room itself, joinHousehold).
	household     func() []callengine.RoomID
	joinHousehold string // household.room, when Run must join it
	householdName string // its name if Run creates it
	log           *slog.Logger

	inbox   queue[rtcItem]
	mu      sync.Mutex
	status  rtc.Status
	changed latest[callengine.Status] // the ring's view of status
	// encrypted rooms are left to classic calls: this MatrixRTC
	// media is not end-to-end encrypted, and Element would refuse it.
	encrypted map[callengine.RoomID]bool

	sends sendQueue
}

// rtcItem is one input of the machine; sfu is set with a successful
// SFUChanged, whose connection the loop takes over.
type rtcItem struct {
	ev  rtc.Event
	sfu io.Closer
}

// newMatrixRTC registers the sync hooks (before the sync loop starts).
func newMatrixRTC(session *matrix.Session, tokens tokenSource, join sfuJoin, serviceURL string, ringTimeout time.Duration,
	household func() []callengine.RoomID, log *slog.Logger) *matrixRTC {
	self := rtc.Device{User: session.UserID(), DeviceID: session.DeviceID()}
	m := &matrixRTC{session: session, tokens: tokens, join: join, household: household,
		log:       log.With("component", "matrixrtc"),
		encrypted: map[callengine.RoomID]bool{}}
	m.mcfg = rtc.DefaultConfig(self, serviceURL)
	m.mcfg.RingTimeout = ringTimeout
	m.status = rtc.Status{Phase: rtc.PhaseIdle, Rooms: []rtc.RoomStatus{}}
	m.changed.publish(ringStatus(m.status))
	session.SetRTCHooks(&matrix.RTCHooks{
		StateTypes: []string{rtc.TypeMember, "m.room.encryption"},
		State:      m.onState,
		EventTypes: []string{rtc.TypeDecline},
		Event: func(e callengine.RoomEvent) {
			m.push(rtcItem{ev: rtc.DeclineReceived{Room: e.Room, Sender: e.Sender, Content: e.Content}})
		},
	})
	return m
}

func (m *matrixRTC) onState(e matrix.StateEvent) {
	if e.Type == "m.room.encryption" {
		var c struct {
			Algorithm string `json:"algorithm"`
		}
		if json.Unmarshal(e.Content, &c) == nil && c.Algorithm != "" {
			m.mu.Lock()
			if !m.encrypted[e.Room] {
				m.log.Warn("room is end-to-end encrypted: MatrixRTC calls are not yet, so it is rung with classic calls only", "room_id", e.Room)
			}
			m.encrypted[e.Room] = true
			m.mu.Unlock()
		}
		return
	}
	m.push(rtcItem{ev: rtc.MemberChanged{Room: e.Room, Event: group.MemberEvent{Type: e.Type, StateKey: e.StateKey,
		Sender: e.Sender, Content: e.Content, Timestamp: e.Timestamp, EventID: e.ID}}})
}

func (m *matrixRTC) push(it rtcItem) { m.inbox.push(it) }

func (m *matrixRTC) take() []rtcItem { return m.inbox.take() }

// ring rings the residents' rooms (and the household room) that are not
// encrypted; false if there is none.
func (m *matrixRTC) ring(residents []callengine.Resident) bool {
	var targets []rtc.Target
	all := make([]callengine.UserID, 0, len(residents))
	m.mu.Lock()
	for _, r := range residents {
		all = append(all, r.User)
		if !m.encrypted[r.Room] {
			targets = append(targets, rtc.Target{Room: r.Room, Residents: []callengine.UserID{r.User}})
		}
	}
	if m.household != nil {
		for _, room := range m.household() {
			if !m.encrypted[room] {
				targets = append(targets, rtc.Target{Room: room, Residents: all, Group: true})
			}
		}
	}
	m.mu.Unlock()
	if len(targets) == 0 {
		return false
	}
	m.push(rtcItem{ev: rtc.RingRequested{Targets: targets}})
	return true
}

// machineStatus is the machine's last status.
func (m *matrixRTC) machineStatus() rtc.Status {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.status
}

// Run runs the machine until ctx ends, then leaves every call. rooms are
// the residents' rooms at start-up, readied in the background.
func (m *matrixRTC) Run(ctx context.Context, rooms map[callengine.UserID]callengine.RoomID) error {
	if m == nil {
		return nil
	}
	go func() {
		m.prepareRooms(ctx, slices.Collect(maps.Values(rooms)))
		switch {
		case m.joinHousehold != "":
			m.householdRoom(ctx, m.joinHousehold)
		case m.household != nil:
			// The household group call joins its room on its own
			// goroutine: ready the room once it has.
			for {
				if hr := m.household(); len(hr) > 0 {
					m.prepareRooms(ctx, hr)
					return
				}
				select {
				case <-ctx.Done():
					return
				case <-time.After(time.Second):
				}
			}
		}
	}()
	r := &rtcRunner{m: m, machine: rtc.New(m.mcfg), sfus: map[callengine.RoomID]io.Closer{},
		sfuCtx: map[callengine.RoomID]context.CancelFunc{}, timers: map[rtc.TimerID]*time.Timer{}}
	go m.sends.run(ctx)
	m.log.Info("MatrixRTC ringing ready", "identity", m.mcfg.Self.Identity(), "service_url", m.mcfg.ServiceURL)
	defer func() {
		lctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		r.step(lctx, rtcItem{ev: rtc.HangupRequested{}})
		m.sends.flush(lctx)
		r.closeAll()
	}()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-m.inbox.wait():
		}
		for _, it := range m.take() {
			r.step(ctx, it)
		}
	}
}

// rtcRunner executes the machine's effects; Run's goroutine owns it.
type rtcRunner struct {
	m       *matrixRTC
	machine *rtc.Machine
	sfus    map[callengine.RoomID]io.Closer
	sfuCtx  map[callengine.RoomID]context.CancelFunc // from JoinSFU to LeaveSFU
	timers  map[rtc.TimerID]*time.Timer
}

func (r *rtcRunner) step(ctx context.Context, it rtcItem) {
	m := r.m
	if e, ok := it.ev.(rtc.SFUChanged); ok && it.sfu != nil {
		if _, wanted := r.sfuCtx[e.Room]; !wanted {
			go it.sfu.Close() // left before the connection was up
			return
		}
		r.sfus[e.Room] = it.sfu
	}
	now := time.Now()
	for _, eff := range r.machine.Step(now, it.ev) {
		r.execute(ctx, eff)
	}
	st := r.machine.Status()
	m.mu.Lock()
	m.status = st
	m.mu.Unlock()
	m.changed.publish(ringStatus(st))
}

func (r *rtcRunner) execute(ctx context.Context, eff rtc.Effect) {
	m := r.m
	switch e := eff.(type) {
	case rtc.PublishMembership:
		m.sends.add(func(ctx context.Context) {
			id, err := m.session.PutState(ctx, e.Room, rtc.TypeMember, e.StateKey, e.Content)
			if err != nil {
				m.log.Error("publish call membership", "room_id", e.Room, "err", err)
			}
			m.push(rtcItem{ev: rtc.MembershipSent{Room: e.Room, EventID: id, Err: err}})
		})
	case rtc.ClearMembership:
		m.sends.add(func(ctx context.Context) {
			if _, err := m.session.PutState(ctx, e.Room, rtc.TypeMember, e.StateKey, struct{}{}); err != nil {
				m.log.Error("clear call membership", "room_id", e.Room, "err", err)
			}
		})
	case rtc.SendNotification:
		m.sends.add(func(ctx context.Context) {
			id, err := m.session.SendEvent(ctx, e.Room, rtc.TypeNotification, e.Content)
			if err != nil {
				m.log.Error("send MatrixRTC ring", "room_id", e.Room, "err", err)
			}
			m.push(rtcItem{ev: rtc.NotificationSent{Room: e.Room, EventID: id, Err: err}})
		})
	case rtc.JoinSFU:
		// The connection lives until LeaveSFU cancels this context.
		jctx, cancel := context.WithCancel(ctx)
		r.sfuCtx[e.Room] = cancel
		go r.joinSFU(jctx, e.Room)
	case rtc.LeaveSFU:
		if cancel := r.sfuCtx[e.Room]; cancel != nil {
			cancel()
			delete(r.sfuCtx, e.Room)
		}
		if c := r.sfus[e.Room]; c != nil {
			delete(r.sfus, e.Room)
			go c.Close()
		}
	case rtc.StartTimer:
		if t := r.timers[e.ID]; t != nil {
			t.Stop()
		}
		id := e.ID
		r.timers[id] = time.AfterFunc(e.After, func() { m.push(rtcItem{ev: rtc.TimerFired{ID: id}}) })
	case rtc.StopTimer:
		if t := r.timers[e.ID]; t != nil {
			t.Stop()
			delete(r.timers, e.ID)
		}
	case rtc.Answered:
		// The ring coordinator sees the answer in the status and
		// withdraws the other paths.
		m.log.Info("MatrixRTC call answered", "room_id", e.Room, "by", e.By.Identity())
	case rtc.Ended:
		m.log.Info("MatrixRTC calls ended", "reason", e.Reason)
	case rtc.Ignored:
		m.log.Info("MatrixRTC event ignored", "room_id", e.Room, "user_id", e.Sender, "what", e.What, "reason", e.Reason)
	case rtc.PhaseChanged:
		m.log.Info("MatrixRTC state", "state", e.Phase)
	}
}

// joinSFU gets a token and connects; the outcome comes back through the
// inbox.
func (r *rtcRunner) joinSFU(ctx context.Context, room callengine.RoomID) {
	m := r.m
	fail := func(err error) {
		m.log.Error("join SFU", "room_id", room, "err", err)
		m.push(rtcItem{ev: rtc.SFUChanged{Room: room, Err: err}})
	}
	tok, err := m.tokens.token(ctx, room)
	if err != nil {
		fail(err)
		return
	}
	presence := func(identity string, present bool) {
		m.push(rtcItem{ev: rtc.ParticipantChanged{Room: room, Identity: identity, Present: present}})
	}
	lost := func(err error) {
		if err == nil {
			err = errors.New("SFU connection closed")
		}
		m.log.Warn("SFU connection lost", "room_id", room, "err", err)
		m.push(rtcItem{ev: rtc.SFUChanged{Room: room, Err: err}})
	}
	c, err := m.join(ctx, tok, presence, lost)
	if err != nil {
		fail(err)
		return
	}
	m.log.Info("joined SFU", "room_id", room, "url", tok.URL)
	m.push(rtcItem{ev: rtc.SFUChanged{Room: room, Connected: true}, sfu: c})
}

func (r *rtcRunner) closeAll() {
	for _, t := range r.timers {
		t.Stop()
	}
	for _, cancel := range r.sfuCtx {
		cancel()
	}
	for _, c := range r.sfus {
		_ = c.Close()
	}
}
