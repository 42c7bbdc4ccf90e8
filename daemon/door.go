package daemon

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/doorbell/intercom/callengine"
	"github.com/doorbell/intercom/device"
	"github.com/doorbell/intercom/matrix"
	mwebrtc "github.com/doorbell/intercom/media/webrtc"
	"github.com/doorbell/intercom/provisioning"
)

// doorParts are the door control and the room notices, wired from the
// configuration.
type doorParts struct {
	door    *device.Door
	notices *device.Notices
	// visitors keeps missed-visitor notices until they are delivered
	// (state_dir/visitors); its Run is one of the daemon's loops.
	visitors *device.VisitorQueue
	// serverTime is the homeserver's clock as the sync last showed it
	// (matrix.Session.ServerTime); nil or zero: unknown.
	serverTime func() (server, at time.Time)
}

// newDoorParts builds the door (policy, relay, audit notices) and the ring
// and missed-visitor notices, with doorPolicy's configuration (the same a
// reload applies).
// household, if not nil, adds the household room to the notices' rooms;
// gate, if not nil, holds the ring notices until the rings have left.
// rooms says where a missed visitor is told of when no room was known at
// the press (the residents' and the household's, as known by then).
func newDoorParts(cfg *provisioning.Config, session *matrix.Session, relay device.PulseRelay, snap device.Snapshotter, household device.Household, gate *ringsFirst, rooms func() []callengine.RoomID, log *slog.Logger) (*doorParts, error) {
	door, err := device.NewDoor(device.DoorOptions{
		Policy: doorPolicy(cfg), Relay: relay, Messenger: session, StateDir: cfg.StateDir,
		Logger: log.With("component", "door"),
	})
	if err != nil {
		return nil, err
	}
	eff := door.Config()
	hint := fmt.Sprintf("Send %s or react with %s to open the door.", eff.Commands[0], eff.ReactionKey)
	if !cfg.Notices.Snapshot {
		snap = nil
	}
	visitors, err := device.NewVisitorQueue(cfg.StateDir, session, rooms, log.With("component", "visitors"))
	if err != nil {
		return nil, err
	}
	visitors.Online = session.Healthy
	notices := device.NewNotices(device.NoticeOptions{
		Messenger: gate.messenger(session), Snapshot: gate.snapshotter(snap), Ring: cfg.Notices.Ring, Missed: cfg.Notices.Missed,
		CommandHint: hint, Door: door, Household: household, Logger: log.With("component", "notices"),
		Visitors: visitors,
	})
	log.Info("door control", "commands", eff.Commands, "reaction", eff.ReactionKey, "pulse", eff.Pulse,
		"authorized", len(eff.Authorized), "only_during_call", eff.OnlyDuringCall, "window", eff.Window)
	return &doorParts{door: door, notices: notices, visitors: visitors, serverTime: session.ServerTime}, nil
}

// route returns the sync handler: call events to the call engine, room
// messages and reactions to the door. It never blocks.
//
// Door commands count from every room the intercom is in, by design: the
// residents' direct rooms and the household room alike (issue 6: door
// control works the same from the household room). The room is no
// credential; the door policy judges the sender (door.authorized), the
// event ID (once only) and its age, whatever the room, and the audit
// notice and any reply go back to the room the command came from. A 🔑
// reaction must target a ring notice of this run, which the notices post
// into the household room too.
func (p *doorParts) route(calls func(callengine.RoomEvent)) func(callengine.RoomEvent) {
	return func(ev callengine.RoomEvent) {
		// From the sync response's arrival, so that decryption counts
		// in the command → relay latency.
		received := ev.Received
		if received.IsZero() {
			received = time.Now()
		}
		m, ok := matrix.ParseMessage(ev)
		if !ok {
			if strings.HasPrefix(ev.Type, "m.call.") || strings.HasPrefix(ev.Type, "org.matrix.call.") {
				calls(ev)
			}
			return
		}
		p.door.Handle(device.DoorRequest{
			EventID: ev.ID, Room: ev.Room, Sender: ev.Sender,
			Text: m.Body, Reaction: m.Kind == matrix.KindReaction, Key: m.Key, Target: m.Target,
			Timestamp: ev.Timestamp, Age: ev.Age, ServerNow: p.serverNow(received),
			Seal: ev.Seal,
		}, received)
	}
}

// serverNow estimates the homeserver's clock at local time t from the
// /sync response that carried the event being routed; zero if unknown.
// The door judges origin_server_ts by it, not by the board's clock
// (issue 19, finding 3).
func (p *doorParts) serverNow(t time.Time) time.Time {
	if p.serverTime == nil {
		return time.Time{}
	}
	srv, at := p.serverTime()
	if srv.IsZero() || at.IsZero() {
		return time.Time{}
	}
	return srv.Add(t.Sub(at))
}

// runTURN keeps the peer factory's ICE servers current: the configured
// turn.uris if any, else the homeserver's TURN credentials, refreshed
// before they expire. Peers created afterwards use them; changed() then
// has the engine re-prepare its pooled peers, which were made with the old
// servers.
func runTURN(ctx context.Context, cfg *provisioning.Config, session *matrix.Session, peers *mwebrtc.PeerFactory, changed func(), log *slog.Logger) error {
	if len(cfg.TURN.URIs) > 0 {
		srv := mwebrtc.ICEServer{URLs: cfg.TURN.URIs, Username: cfg.TURN.Username}
		if cfg.TURN.PasswordFile != "" {
			pw, err := os.ReadFile(cfg.TURN.PasswordFile)
			if err != nil {
				return fmt.Errorf("turn.password_file: %w", err)
			}
			srv.Credential = strings.TrimSpace(string(pw))
		}
		peers.SetICEServers([]mwebrtc.ICEServer{srv})
		changed()
		log.Info("ICE servers from the configuration", "uris", cfg.TURN.URIs)
		return nil
	}
	if !cfg.TURN.FromHomeserver {
		if cfg.TURN.RelayOnly {
			log.Warn("turn.relay_only with neither turn.uris nor turn.from_homeserver: no call can connect")
		}
		return nil
	}
	return session.RunTURN(ctx, func(ts []matrix.TURNServer) {
		list := make([]mwebrtc.ICEServer, 0, len(ts))
		for _, t := range ts {
			list = append(list, mwebrtc.ICEServer{URLs: t.URIs, Username: t.Username, Credential: t.Password})
		}
		peers.SetICEServers(list)
		changed()
	})
}
