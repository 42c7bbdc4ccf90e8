package daemon

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/doorbell/intercom/callengine"
	"github.com/doorbell/intercom/callengine/group"
	"github.com/doorbell/intercom/matrix"
	"github.com/doorbell/intercom/provisioning"
)

// household runs the household room's group call (household.group_call:
// mesh): the pure callengine/group machine on one goroutine, its Matrix
// and WebRTC effects executed here. Every peer comes from the daemon's
// PeerFactory, so all household devices share the stream's one encoder.
// A nil *household (group calls off) does nothing.
type household struct {
	cfg     *provisioning.Config
	session *matrix.Session
	peers   callengine.PeerFactory
	log     *slog.Logger

	inbox  queue[hhItem] // the machine's inputs (queue.go)
	mu     sync.Mutex
	status group.Status
	// changed is the ring's view of status (ring.Line); since is when its
	// phase last changed.
	changed latest[callengine.Status]
	since   time.Time
	// lastConnected is when a household device was last seen connected
	// (the notices ask whether a ring was answered there).
	lastConnected time.Time

	sends sendQueue // membership, ring and to-device events, in order (queue.go)
}

// hhItem is one input of the machine; peer is set for OfferCreated and
// OfferAccepted, whose peers the loop takes over.
type hhItem struct {
	ev   group.Event
	peer callengine.Peer
}

// newHousehold registers the sync hooks (before the sync loop starts) and
// returns the household call, or nil when group calls are off.
func newHousehold(cfg *provisioning.Config, session *matrix.Session, peers callengine.PeerFactory, log *slog.Logger) *household {
	if cfg.Household.GroupCall != "mesh" {
		return nil
	}
	h := &household{cfg: cfg, session: session, peers: peers, log: log.With("component", "household")}
	h.changed.publish(householdRingStatus(group.Status{}, time.Time{}))
	room := ""
	if strings.HasPrefix(cfg.Household.Room, "!") {
		room = cfg.Household.Room
	}
	h.setHooks(callengine.RoomID(room))
	return h
}

func (h *household) setHooks(room callengine.RoomID) {
	h.session.SetHouseholdHooks(&matrix.HouseholdHooks{
		Room:       room,
		StateTypes: []string{group.TypeMember, group.TypeElementCallMember},
		State:      func(e matrix.StateEvent) { h.push(hhItem{ev: stateEvent(e)}) },
		ToDevice: func(e matrix.ToDeviceEvent) {
			h.push(hhItem{ev: group.ToDeviceReceived{Sender: e.Sender, Type: e.Type, Content: e.Content}})
		},
	})
}

func stateEvent(e matrix.StateEvent) group.Event {
	if e.Type == "m.room.member" {
		var c struct {
			Membership string `json:"membership"`
		}
		_ = json.Unmarshal(e.Content, &c)
		return group.RoomMemberChanged{User: callengine.UserID(e.StateKey), Membership: c.Membership}
	}
	return group.MemberChanged{Event: group.MemberEvent{Type: e.Type, StateKey: e.StateKey, Sender: e.Sender,
		Content: e.Content, Timestamp: e.Timestamp, EventID: e.ID}}
}

func (h *household) push(it hhItem) { h.inbox.push(it) }

func (h *household) take() []hhItem { return h.inbox.take() }

// The household runner is the household path's ring.Line.

// Ring rings the household call: the intercom joins it and rings the
// room (MSC4075). The residents are not needed: every member is rung.
func (h *household) Ring(context.Context, []callengine.Resident) error {
	h.push(hhItem{ev: group.RingRequested{}})
	return nil
}

// Withdraw: the ring was answered on another path.
func (h *household) Withdraw() { h.push(hhItem{ev: group.AnsweredElsewhere{}}) }

// Hangup leaves the household call.
func (h *household) Hangup() { h.push(hhItem{ev: group.LeaveRequested{}}) }

// Status is the household call as the ring sees it.
func (h *household) Status() callengine.Status { return h.changed.get() }

// Subscribe delivers the ring's view of every change.
func (h *household) Subscribe() (<-chan callengine.Status, func()) { return h.changed.subscribe() }

// householdRingStatus maps the group call's status onto the ring: a live
// view is no ring (a press may ring over it), an open ring rings, a
// device connected by a ring is a call. Every device's call is a leg.
func householdRingStatus(st group.Status, since time.Time) callengine.Status {
	out := callengine.Status{Phase: callengine.PhaseIdle, Since: since, Calls: []callengine.CallStatus{}}
	switch {
	case st.Rung:
		out.Phase = callengine.PhaseRinging
	case st.LiveView:
	case st.Phase == group.PhaseInCall:
		out.Phase = callengine.PhaseInCall
	case st.Phase == group.PhaseRinging:
		out.Phase = callengine.PhaseRinging
	}
	for _, c := range st.Calls {
		leg := callengine.CallStatus{CallID: c.CallID, Room: st.Room, Resident: c.User, State: callengine.LegRinging,
			Since: since, Direction: "outbound"}
		if !c.Outbound {
			leg.Direction = "inbound"
		}
		switch c.State {
		case "connected", "held":
			leg.State = callengine.LegConnected
		case "connecting":
			leg.State = callengine.LegAnswered
		case "answering", "accepting":
			leg.State = callengine.LegAnswering
		}
		out.Calls = append(out.Calls, leg)
	}
	return out
}

// groupStatus is the household call's last status; nil with group calls
// off.
func (h *household) groupStatus() *group.Status {
	if h == nil {
		return nil
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	st := h.status
	return &st
}

// Rooms is the household room once it is joined, for the ring and
// missed-visitor notices; none before, or with group calls off.
func (h *household) Rooms() []callengine.RoomID {
	if h == nil {
		return nil
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.status.Room == "" {
		return nil
	}
	return []callengine.RoomID{h.status.Room}
}

// AnsweredSince reports whether a household device has been connected to
// the door at or after t: a ring a household device took is not a missed
// visitor, even if no resident answered the 1:1 call.
func (h *household) AnsweredSince(t time.Time) bool {
	if h == nil {
		return false
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.status.Phase == group.PhaseInCall || (!h.lastConnected.IsZero() && !h.lastConnected.Before(t))
}

// newSessionID is the intercom's membershipID for this run: 16 random
// bytes, unpadded URL-safe base64 (dart-sdk also uses a random base64
// session ID per app start).
func newSessionID() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}

// Run joins the household room, reads its memberships and runs the
// machine until ctx ends. On the way out it leaves the call.
func (h *household) Run(ctx context.Context) error {
	if h == nil {
		return nil
	}
	var room callengine.RoomID
	if err := retry(ctx, h.log, "household room", func() error {
		// Created if missing and residents invited, as provision does.
		hr, err := h.session.EnsureHouseholdRoom(ctx, h.cfg.Household.Room, householdRoomName(h.cfg))
		room = hr.Room
		return err
	}); err != nil {
		return nil // ctx ended
	}
	h.setHooks(room)
	self := group.Device{User: h.session.UserID(), DeviceID: h.session.DeviceID()}
	mcfg := group.DefaultConfig(self, newSessionID(), room)
	mcfg.RingTimeout = h.cfg.Ring.Timeout
	// Live view from the household: devices of these users joining the
	// call make the intercom join without a ring (live_view.allowed,
	// default the residents), as their 1:1 calls are answered.
	mcfg.LiveView = map[callengine.UserID]bool{}
	for _, u := range h.cfg.LiveViewAllowed() {
		mcfg.LiveView[callengine.UserID(u)] = true
	}
	m := group.New(mcfg)
	h.mu.Lock()
	h.status = m.Status(time.Now()) // the room, for Rooms, before any event
	h.mu.Unlock()
	h.log.Info("household group call ready", "room_id", room, "session_id", mcfg.SessionID, "device_id", self.DeviceID)
	var state []matrix.StateEvent
	if err := retry(ctx, h.log, "read household room state", func() (err error) {
		state, err = h.session.RoomStateEvents(ctx, room, group.TypeMember, group.TypeElementCallMember)
		return err
	}); err != nil {
		return nil
	}
	r := &hhRunner{h: h, m: m, peers: map[callengine.CallID]callengine.Peer{}, timers: map[group.TimerID]*time.Timer{}}
	go h.sends.run(ctx) // dart-sdk does not reorder by seq: send in order
	for _, e := range state {
		r.step(ctx, hhItem{ev: stateEvent(e)})
	}
	defer func() {
		// Leave the call and clear the membership on the way out.
		lctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		r.step(lctx, hhItem{ev: group.LeaveRequested{}})
		h.sends.flush(lctx)
		for _, t := range r.timers {
			t.Stop()
		}
		for _, p := range r.peers {
			_ = p.Close()
		}
	}()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-h.inbox.wait():
		}
		for _, it := range h.take() {
			r.step(ctx, it)
		}
	}
}

// hhRunner executes the machine's effects; it is owned by Run's goroutine.
type hhRunner struct {
	h      *household
	m      *group.Machine
	peers  map[callengine.CallID]callengine.Peer
	timers map[group.TimerID]*time.Timer
}

func (r *hhRunner) step(ctx context.Context, it hhItem) {
	h := r.h
	queue := []hhItem{it}
	for len(queue) > 0 {
		it := queue[0]
		queue = queue[1:]
		switch e := it.ev.(type) {
		case group.OfferCreated:
			if it.peer != nil {
				r.peers[e.CallID] = it.peer
			}
		case group.OfferAccepted:
			if it.peer != nil {
				r.peers[e.CallID] = it.peer
			}
		}
		now := time.Now()
		for _, eff := range r.m.Step(now, it.ev) {
			if next := r.execute(ctx, eff); next != nil {
				queue = append(queue, hhItem{ev: next})
			}
		}
		st := r.m.Status(now)
		h.mu.Lock()
		h.status = st
		if st.Phase == group.PhaseInCall {
			h.lastConnected = now
		}
		prev := h.changed.get()
		rs := householdRingStatus(st, h.since)
		if rs.Phase != prev.Phase {
			h.since = now
			rs.Since = now
		}
		h.mu.Unlock()
		h.changed.publish(rs)
	}
}

// execute runs one effect. Quick peer operations run here and return
// their outcome; slow ones (making peers) and requests run elsewhere and
// report through the inbox.
func (r *hhRunner) execute(ctx context.Context, eff group.Effect) group.Event {
	h := r.h
	switch e := eff.(type) {
	case group.PublishMembership:
		h.sends.add(func(ctx context.Context) {
			id, err := h.session.PutState(ctx, h.roomOf(r), group.TypeMember, e.StateKey, e.Content)
			if err != nil {
				h.log.Error("publish household membership", "err", err)
			}
			h.push(hhItem{ev: group.MembershipPublished{EventID: id, Err: err}})
		})
	case group.SendNotification:
		h.sends.add(func(ctx context.Context) {
			if _, err := h.session.SendEvent(ctx, h.roomOf(r), group.TypeRTCNotification, e.Content); err != nil {
				h.log.Error("send ring notification", "err", err)
			}
		})
	case group.SendToDevice:
		h.sends.add(func(ctx context.Context) {
			if err := h.session.SendToDevice(ctx, e.Type, e.To.User, e.To.DeviceID, e.Content); err != nil {
				h.log.Warn("send to-device call event", "call_id", e.CallID, "type", e.Type, "err", err)
			}
		})
	case group.CreateOffer:
		go func() {
			p, err := h.peers.NewPeer(ctx, r.sink(e.CallID))
			ev := group.OfferCreated{CallID: e.CallID, Err: err}
			if err == nil {
				ev.SDP, ev.StreamID = p.Offer(), p.StreamID()
			}
			h.push(hhItem{ev: ev, peer: p})
		}()
	case group.AcceptOffer:
		go func() {
			p, answer, err := h.peers.AcceptOffer(ctx, e.SDP, r.sink(e.CallID))
			ev := group.OfferAccepted{CallID: e.CallID, SDP: answer, Err: err}
			if err == nil {
				ev.StreamID = p.StreamID()
			}
			h.push(hhItem{ev: ev, peer: p})
		}()
	case group.ApplyAnswer:
		var err error = errNoPeer
		if p := r.peers[e.CallID]; p != nil {
			err = p.SetAnswer(e.SDP)
		}
		return group.AnswerApplied{CallID: e.CallID, Err: err}
	case group.AnswerNegotiation:
		if p := r.peers[e.CallID]; p != nil {
			sdp, err := p.AnswerOffer(e.SDP)
			return group.NegotiationAnswered{CallID: e.CallID, SDP: sdp, Err: err}
		}
	case group.ApplyCandidates:
		if p := r.peers[e.CallID]; p != nil {
			if err := p.AddCandidates(e.Candidates); err != nil {
				h.log.Debug("add household candidates", "call_id", e.CallID, "err", err)
			}
		}
	case group.ClosePeer:
		if p := r.peers[e.CallID]; p != nil {
			delete(r.peers, e.CallID)
			go p.Close()
		}
	case group.StartTimer:
		if t := r.timers[e.ID]; t != nil {
			t.Stop()
		}
		id := e.ID
		r.timers[id] = time.AfterFunc(e.After, func() { h.push(hhItem{ev: group.TimerFired{ID: id}}) })
	case group.StopTimer:
		if t := r.timers[e.ID]; t != nil {
			t.Stop()
			delete(r.timers, e.ID)
		}
	case group.Ignored:
		h.log.Info("household event ignored", "user_id", e.Sender, "type", e.Type, "reason", e.Reason)
	case group.PhaseChanged:
		h.log.Info("household call", "state", e.Phase)
	}
	return nil
}

func (h *household) roomOf(r *hhRunner) callengine.RoomID { return callengine.RoomID(r.m.ConfID()) }

// sink turns a peer's events into machine events.
func (r *hhRunner) sink(id callengine.CallID) func(callengine.PeerEvent) {
	return func(pe callengine.PeerEvent) {
		switch {
		case pe.Candidate != nil:
			r.h.push(hhItem{ev: group.LocalCandidates{CallID: id, Candidates: []callengine.Candidate{*pe.Candidate}}})
		case pe.State != nil:
			r.h.push(hhItem{ev: group.PeerChanged{CallID: id, State: *pe.State}})
		}
	}
}

var errNoPeer = errors.New("household: no peer for this call")
