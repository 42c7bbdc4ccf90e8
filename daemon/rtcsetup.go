package daemon

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/doorbell/intercom/callengine"
	"github.com/doorbell/intercom/callengine/group"
	"github.com/doorbell/intercom/callengine/ring"
	"github.com/doorbell/intercom/callengine/rtc"
	"github.com/doorbell/intercom/matrix"
	"github.com/doorbell/intercom/media"
	mlivekit "github.com/doorbell/intercom/media/livekit"
	"github.com/doorbell/intercom/provisioning"
)

// matrixRTC is MatrixRTC ringing (matrixrtc.enabled) in the daemon:
// callengine/rtc's runner over the session and LiveKit, and the chores
// that ready the rooms for it. A nil *matrixRTC (MatrixRTC off) does
// nothing.
type matrixRTC struct {
	runner  *rtc.Runner // the matrixrtc path's ring.Line
	session *matrix.Session
	self    rtc.Device
	log     *slog.Logger
	// household gives the household group call's room once it has
	// joined it; nil without a group call.
	household func() []callengine.RoomID
	// joinHousehold is household.room when Run must join it itself (no
	// group call), householdName its name if Run creates it, joined the
	// room once joined.
	joinHousehold string
	householdName string
	joined        atomic.Pointer[callengine.RoomID]
	// householdRooms are the household rooms a press rings (nil without
	// matrixrtc.household).
	householdRooms func() []callengine.RoomID
	// transport is the JWT service advertised and asked for tokens
	// (rtctransport.go); discover: it comes from the homeserver.
	transport *rtcTransport
	discover  bool
	push      roomPushes
	// openID keeps the token for the JWT services ready ahead of the
	// press (openid.go).
	openID *openIDCache
}

// newDaemonRTC makes the MatrixRTC side when matrixrtc.enabled: tokens
// from the JWT service or self-minted, SFU connections that publish the
// stream's own encoders. It registers the sync hooks, so it must run
// after login (the device ID is part of its identity) and before the sync
// loop (whose filter must include its events).
func newDaemonRTC(cfg *provisioning.Config, session *matrix.Session, stream *media.Stream, hw *hardware, meter *media.AudioMeter, hh *group.Runner, log *slog.Logger) (*matrixRTC, error) {
	mc := cfg.MatrixRTC
	if !mc.Enabled {
		return nil, nil
	}
	self := rtc.Device{User: session.UserID(), DeviceID: session.DeviceID()}
	// The JWT service: configured, or discovered from the homeserver
	// once Run has asked it (rtctransport.go).
	transport := &rtcTransport{}
	if mc.ServiceURL != "" {
		transport.set(mc.ServiceURL, "config")
	}
	// The SFU the intercom publishes on must give it the identity
	// "<user>:<device>" that clients pair with its membership: /sfu/get
	// (mlivekit.EndpointLegacy says why).
	oid := &openIDCache{fetch: session.OpenIDToken, log: log.With("component", "matrixrtc")}
	openID := oid.Get
	var tokens tokenSource = transportTokens{transport: transport, tokens: &mlivekit.ServiceTokens{Endpoint: mlivekit.EndpointLegacy,
		HTTP: &http.Client{}, Self: self, OpenID: openID}}
	if mc.SelfMinted() {
		tokens = mlivekit.MintedTokens{URL: mc.LiveKit.URL, Key: mc.LiveKit.APIKey, Secret: mc.LiveKit.Secret, Self: self}
	}
	m := &matrixRTC{session: session, self: self, log: log.With("component", "matrixrtc"), householdName: householdRoomName(cfg),
		transport: transport, discover: mc.Discovers(), openID: oid}
	var householdRooms func() []callengine.RoomID
	switch {
	case mc.Household && hh != nil:
		m.household = hh.Rooms // none until the household call has joined its room
		householdRooms = m.household
	case mc.Household:
		m.joinHousehold = cfg.Household.Room // no group call: Run joins the room itself
		householdRooms = m.joinedHousehold
	}
	lklog := log.With("component", "livekit")
	mlivekit.SetProcessLogger(lklog)
	sfu := livekitSFU{tokens: tokens, join: livekitJoin(stream, hw.sink(), meter, lklog, false),
		remote: &mlivekit.ServiceTokens{Endpoint: mlivekit.EndpointAuto, HTTP: &http.Client{}, Self: self, OpenID: openID},
		listen: livekitJoin(stream, hw.sink(), meter, lklog, true), log: m.log}
	mcfg := rtc.DefaultConfig(self, mc.ServiceURL)
	mcfg.RingTimeout = cfg.Ring.Timeout
	m.householdRooms = householdRooms
	// With the session's encryption on, encrypted rooms' calls are
	// joined with encrypted media; without it they are left to classic
	// calls.
	m.runner = rtc.NewRunner(rtc.RunnerConfig{Machine: mcfg, Household: householdRooms, Logger: m.log,
		MediaEncryption: session.Encrypting()}, session, sfu)
	transport.changed = m.runner.SetTransport
	m.push.log, m.push.self = m.log, self.User
	session.SetRTCHooks(&matrix.RTCHooks{
		StateTypes:    []string{rtc.TypeMember, rtc.TypeEncryption, rtc.TypePowerLevels},
		State:         m.handleState,
		EventTypes:    []string{rtc.TypeDecline},
		Event:         m.runner.HandleRoomEvent,
		ToDeviceTypes: []string{rtc.TypeEncryptionKeys},
		ToDevice: func(e matrix.ToDeviceEvent) {
			m.runner.HandleToDevice(e.Sender, e.Device, e.Type, e.Content, e.Encrypted)
		},
	})
	return m, nil
}

// line is the matrixrtc path for the ring coordinator: the runner, which
// refuses rings until a transport is known.
func (m *matrixRTC) line() ring.Line { return rtcLine{Runner: m.runner, transport: m.transport} }

// joinedHousehold is the household room Run joined for MatrixRTC; none
// before.
func (m *matrixRTC) joinedHousehold() []callengine.RoomID {
	if r := m.joined.Load(); r != nil {
		return []callengine.RoomID{*r}
	}
	return nil
}

// handleState takes the sync's state events for MatrixRTC: the rooms'
// power levels here, memberships and encryption in the runner.
func (m *matrixRTC) handleState(e callengine.StateEvent) {
	if e.Type == rtc.TypePowerLevels {
		if e.StateKey == "" {
			m.push.levels(e.Room, e.Content)
		}
		return
	}
	m.runner.HandleState(e)
}

// rtcSection is the matrix status's matrixrtc part.
type rtcSection struct {
	rtc.Status
	// HouseholdRooms are the household rooms a press rings through
	// MatrixRTC: none until joined, or without matrixrtc.household.
	HouseholdRooms []callengine.RoomID `json:"household_rooms"`
	// Transport is the JWT service in use, or why none is known yet.
	Transport transportStatus `json:"transport"`
	// Push says, for each room MatrixRTC rings, whether the ring's
	// @room mention can push the residents there.
	Push []roomPush `json:"push"`
}

// rtcStatus is the MatrixRTC section; nil with MatrixRTC off.
func (m *matrixRTC) rtcStatus() *rtcSection {
	if m == nil {
		return nil
	}
	st := rtcSection{Status: m.runner.MachineStatus(), HouseholdRooms: []callengine.RoomID{}, Transport: m.transport.status(), Push: m.push.status()}
	if m.householdRooms != nil {
		st.HouseholdRooms = append(st.HouseholdRooms, m.householdRooms()...)
	}
	return &st
}

// Run runs the runner until ctx ends. rooms are the residents' rooms at
// start-up, readied in the background, as is the household room.
func (m *matrixRTC) Run(ctx context.Context, rooms map[callengine.UserID]callengine.RoomID) error {
	if m == nil {
		return nil
	}
	var wg sync.WaitGroup
	defer wg.Wait()
	if m.discover {
		wg.Go(func() { discoverTransport(ctx, m.session, m.transport, m.log) })
	}
	// Even with self-minted tokens for its own SFU, the intercom asks
	// other members' JWT services (multi-SFU) with an OpenID token.
	wg.Go(func() { m.openID.Run(ctx) })
	wg.Go(func() {
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
	})
	return m.runner.Run(ctx)
}

// prepareRooms readies the residents' rooms for MatrixRTC, best effort and
// off the path to READY=1: members may send call memberships (rooms made
// by older firmware lack that), the room call's slot is open, and a
// membership the intercom left behind
// (a crash, a power cut: the homeserver may lack delayed events) is
// cleared, so residents' apps stop showing a call in progress.
func (m *matrixRTC) prepareRooms(ctx context.Context, rooms []callengine.RoomID) {
	key := rtc.StateKey(m.self)
	for _, room := range rooms {
		m.push.rung(room)
		if changed, err := m.session.AllowCallMembership(ctx, room); err != nil {
			m.log.Warn("residents may be unable to join MatrixRTC calls in this room", "room_id", room, "err", err)
		} else if changed {
			m.log.Info("allowed call memberships in room", "room_id", room)
		}
		state, err := m.session.RoomStateEvents(ctx, room, rtc.TypeMember, rtc.TypeSlot, rtc.TypePowerLevels)
		if err != nil {
			m.log.Warn("read call memberships", "room_id", room, "err", err)
			continue
		}
		for _, e := range state {
			if e.Type == rtc.TypePowerLevels && e.StateKey == "" {
				m.push.levels(room, e.Content)
			}
		}
		// js-sdk 43 (Element Web, Element Call) drops rings for a slot
		// that is not open.
		if !slices.ContainsFunc(state, func(e callengine.StateEvent) bool {
			return e.Type == rtc.TypeSlot && e.StateKey == rtc.Slot && rtc.SlotOpen(e.Content)
		}) {
			if _, err := m.session.PutState(ctx, room, rtc.TypeSlot, rtc.Slot, rtc.OpenSlot); err != nil {
				m.log.Warn("open the room's call slot; some clients will not ring", "room_id", room, "err", err)
			}
		}
		for _, e := range state {
			if e.Type == rtc.TypeMember && e.StateKey == key && len(e.Content) > 2 && m.runner.MachineStatus().Phase == rtc.PhaseIdle {
				m.log.Info("clearing a call membership left behind", "room_id", room)
				cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
				if _, err := m.session.PutState(cctx, room, rtc.TypeMember, key, struct{}{}); err != nil {
					m.log.Warn("clear stale call membership", "room_id", room, "err", err)
				}
				cancel()
			}
		}
	}
}

// householdRoom joins the household room for its MatrixRTC ring when no
// household group call does (household.group_call off), creating it and
// inviting the residents when missing as provision does, retrying until it
// succeeds or ctx ends, and readies it like the residents' rooms.
func (m *matrixRTC) householdRoom(ctx context.Context, alias string) {
	var room callengine.RoomID
	if err := retry(ctx, m.log, "join household room for MatrixRTC", func() (err error) {
		hr, err := m.session.EnsureHouseholdRoom(ctx, alias, m.householdName)
		room = hr.Room
		return err
	}); err != nil {
		return
	}
	m.joined.Store(&room)
	m.prepareRooms(ctx, []callengine.RoomID{room})
}

// roomPush is, for one room MatrixRTC rings, whether the ring's @room
// mention can push the residents: the intercom's power there against the
// room's notifications.room level (matrix-voip.md §9). In the direct
// rooms it created the intercom has power 100; in a household room
// somebody else made it may have 0.
type roomPush struct {
	Room       callengine.RoomID `json:"room_id"`
	Power      int64             `json:"power"`
	RoomNotify int64             `json:"notifications_room"`
	// Problem, when set, is what an installer must fix.
	Problem string `json:"problem,omitempty"`
}

// roomPushes follows the power levels of the rooms MatrixRTC rings, from
// the start-up chores and from sync (a room's power levels can change at
// any time), and says once per change when the intercom cannot @room
// there. The sync goroutine and the chores both write it.
type roomPushes struct {
	log  *slog.Logger
	self callengine.UserID

	mu     sync.Mutex
	known  map[callengine.RoomID]roomPush // every room whose levels were seen
	rings  map[callengine.RoomID]bool     // rooms MatrixRTC rings
	logged map[callengine.RoomID]string   // the problem last logged
}

// levels takes a room's m.room.power_levels content.
func (p *roomPushes) levels(room callengine.RoomID, content []byte) {
	have, need, err := rtc.RoomNotifyPower(content, p.self)
	rp := roomPush{Room: room, Power: have, RoomNotify: need}
	switch {
	case err != nil:
		rp.Problem = fmt.Sprintf("cannot read the room's power levels (%v); residents may not be pushed", err)
	case have < need:
		rp.Problem = fmt.Sprintf("cannot @room-notify: power %d < %d (notifications.room); residents are pushed only where their homeserver pushes user mentions", have, need)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.known == nil {
		p.known = map[callengine.RoomID]roomPush{}
	}
	p.known[room] = rp
	p.report(room)
}

// rung marks room as one MatrixRTC rings.
func (p *roomPushes) rung(room callengine.RoomID) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.rings == nil {
		p.rings, p.logged = map[callengine.RoomID]bool{}, map[callengine.RoomID]string{}
	}
	p.rings[room] = true
	p.report(room)
}

// report logs a rung room's problem when it appears, changes or goes.
// The caller holds mu.
func (p *roomPushes) report(room callengine.RoomID) {
	rp, ok := p.known[room]
	if !ok || !p.rings[room] || p.logged[room] == rp.Problem {
		return
	}
	if rp.Problem != "" {
		p.log.Warn("MatrixRTC rings here may not push: give the intercom the power level of notifications.room", "room_id", room,
			"power", rp.Power, "notifications_room", rp.RoomNotify, "problem", rp.Problem)
	} else {
		p.log.Info("the intercom may @room-notify here now", "room_id", room, "power", rp.Power)
	}
	p.logged[room] = rp.Problem
}

// status lists the rooms MatrixRTC rings whose power levels are known.
func (p *roomPushes) status() []roomPush {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := []roomPush{}
	for room := range p.rings {
		if rp, ok := p.known[room]; ok {
			out = append(out, rp)
		}
	}
	slices.SortFunc(out, func(a, b roomPush) int { return strings.Compare(string(a.Room), string(b.Room)) })
	return out
}
