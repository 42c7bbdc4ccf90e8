package daemon

import (
	"context"
	"log/slog"
	"strings"

	"github.com/doorbell/intercom/callengine"
	"github.com/doorbell/intercom/callengine/group"
	"github.com/doorbell/intercom/matrix"
	"github.com/doorbell/intercom/provisioning"
)

// newHousehold makes the household room's group call (household.group_call:
// mesh), callengine/group's runner over the session and the daemon's
// PeerFactory, so every household device shares the stream's one encoder.
// It registers the sync hooks, so it must run before the sync loop
// starts; nil when group calls are off.
func newHousehold(cfg *provisioning.Config, session *matrix.Session, peers callengine.PeerFactory, log *slog.Logger) *group.Runner {
	if cfg.Household.GroupCall != "mesh" {
		return nil
	}
	// Live view from the household: devices of these users joining the
	// call make the intercom join without a ring, as their 1:1 calls are
	// answered.
	liveView := liveViewers(cfg)
	var r *group.Runner
	setHooks := func(room callengine.RoomID) {
		session.SetHouseholdHooks(&matrix.HouseholdHooks{
			Room:       room,
			StateTypes: []string{group.TypeMember, group.TypeElementCallMember},
			State:      r.HandleState,
			ToDevice:   func(e matrix.ToDeviceEvent) { r.HandleToDevice(e.Sender, e.Type, e.Content) },
		})
	}
	r = group.NewRunner(group.RunnerConfig{
		JoinRoom: func(ctx context.Context) (callengine.RoomID, error) {
			// Created if missing and residents invited, as provision does.
			hr, err := session.EnsureHouseholdRoom(ctx, cfg.Household.Room, householdRoomName(cfg))
			if err != nil {
				return "", err
			}
			setHooks(hr.Room)
			// The room key is shared now and kept shared by the sync
			// loop, so that the ring does not wait for it.
			if err := session.PrepareEncryption(ctx, hr.Room); err != nil {
				log.Warn("share the household room's key ahead", "room_id", hr.Room, "err", err)
			}
			return hr.Room, nil
		},
		RingTimeout:       cfg.Ring.Timeout,
		LiveView:          liveView,
		MaxDevicesPerUser: cfg.Household.MaxDevicesPerUser,
		MaxCalls:          cfg.Household.MaxCalls,
		Logger:            log.With("component", "household"),
	}, session, peers)
	room := ""
	if strings.HasPrefix(cfg.Household.Room, "!") {
		room = cfg.Household.Room
	}
	setHooks(callengine.RoomID(room))
	return r
}
