package daemon

import (
	"context"
	"log/slog"
	"net/http"
	"slices"
	"time"

	"github.com/doorbell/intercom/callengine"
	"github.com/doorbell/intercom/callengine/group"
	"github.com/doorbell/intercom/callengine/matrix"
	"github.com/doorbell/intercom/callengine/rtc"
	"github.com/doorbell/intercom/media"
	mlivekit "github.com/doorbell/intercom/media/livekit"
	"github.com/doorbell/intercom/provisioning"
)

// newDaemonRTC makes the MatrixRTC side when matrixrtc.enabled: tokens
// from the JWT service or self-minted, SFU connections that publish the
// stream's own encoders. It must run after login and before the sync loop.
func newDaemonRTC(cfg *provisioning.Config, session *matrix.Session, stream *media.Stream, hw *hardware, meter *media.AudioMeter, hh *group.Runner, log *slog.Logger) (*matrixRTC, error) {
	mc := cfg.MatrixRTC
	if !mc.Enabled {
		return nil, nil
	}
	self := rtc.Device{User: session.UserID(), DeviceID: session.DeviceID()}
	var tokens tokenSource = serviceTokens{session: session, url: mc.ServiceURL, http: &http.Client{}}
	if mc.SelfMinted() {
		tokens = mintedTokens{url: mc.LiveKit.URL, key: mc.LiveKit.APIKey, secret: mc.LiveKit.Secret, self: self}
	}
	var householdRooms func() []callengine.RoomID
	var joinHousehold string
	switch {
	case mc.Household && hh != nil:
		householdRooms = hh.Rooms // none until the household call has joined its room
	case mc.Household:
		joinHousehold = cfg.Household.Room // no group call: Run joins the room itself
	}
	lklog := log.With("component", "livekit")
	mlivekit.SetProcessLogger(lklog)
	join := livekitJoin(stream, hw.sink(), meter, lklog)
	m := newMatrixRTC(session, tokens, join, mc.ServiceURL, cfg.Ring.Timeout, householdRooms, log)
	m.joinHousehold, m.householdName = joinHousehold, householdRoomName(cfg)
	return m, nil
}

// prepareRooms readies the residents' rooms for MatrixRTC, best effort and
// off the path to READY=1: members may send call memberships (rooms made
// by older firmware lack that), the room call's slot is open, and a
// membership the intercom left behind
// (a crash, a power cut: the homeserver may lack delayed events) is
// cleared, so residents' apps stop showing a call in progress.
func (m *matrixRTC) prepareRooms(ctx context.Context, rooms []callengine.RoomID) {
	key := rtc.StateKey(m.mcfg.Self)
	for _, room := range rooms {
		if changed, err := m.session.AllowCallMembership(ctx, room); err != nil {
			m.log.Warn("residents may be unable to join MatrixRTC calls in this room", "room_id", room, "err", err)
		} else if changed {
			m.log.Info("allowed call memberships in room", "room_id", room)
		}
		state, err := m.session.RoomStateEvents(ctx, room, rtc.TypeMember, rtc.TypeSlot)
		if err != nil {
			m.log.Warn("read call memberships", "room_id", room, "err", err)
			continue
		}
		// js-sdk 43 (Element Web, Element Call) drops rings for a slot
		// that is not open.
		if !slices.ContainsFunc(state, func(e matrix.StateEvent) bool {
			return e.Type == rtc.TypeSlot && e.StateKey == rtc.Slot && rtc.SlotOpen(e.Content)
		}) {
			if _, err := m.session.PutState(ctx, room, rtc.TypeSlot, rtc.Slot, rtc.OpenSlot); err != nil {
				m.log.Warn("open the room's call slot; some clients will not ring", "room_id", room, "err", err)
			}
		}
		for _, e := range state {
			if e.Type == rtc.TypeMember && e.StateKey == key && len(e.Content) > 2 && m.machineStatus().Phase == rtc.PhaseIdle {
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
	m.mu.Lock()
	m.household = func() []callengine.RoomID { return []callengine.RoomID{room} }
	m.mu.Unlock()
	m.prepareRooms(ctx, []callengine.RoomID{room})
}
