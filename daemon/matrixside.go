package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/doorbell/intercom/callengine"
	"github.com/doorbell/intercom/callengine/group"
	"github.com/doorbell/intercom/callengine/ring"
	"github.com/doorbell/intercom/device"
	"github.com/doorbell/intercom/matrix"
	"github.com/doorbell/intercom/media"
	mwebrtc "github.com/doorbell/intercom/media/webrtc"
	"github.com/doorbell/intercom/provisioning"
	"github.com/doorbell/intercom/systemd"
)

// matrixSide brings up everything that needs the homeserver, beside the
// door that already runs (issue 15): login, the residents' rooms, the
// MatrixRTC set-up, the call engines and the sync loop. Once they are up
// it attaches the ring coordinator to the intercom, so the next press
// (and a visitor whose bell still rings) rings the residents.
type matrixSide struct {
	cfg      *provisioning.Config
	session  *matrix.Session
	stream   *media.Stream
	hw       *hardware
	meter    *media.AudioMeter
	peers    *mwebrtc.PeerFactory
	hh       *group.Runner
	gate     *ringsFirst
	doors    *doorParts
	dir      *directory
	intercom *device.Intercom
	mets     *metrics // times the classic invites (metrics.go)
	apiAddr  string   // for the "intercom ready" line
	log      *slog.Logger

	// stage says what the side waits for, for the status; "" once up.
	stage atomic.Pointer[string]
	// rtc is the MatrixRTC set-up once made (nil before, and with
	// MatrixRTC off).
	rtc atomic.Pointer[matrixRTC]
	// syncing: the sync loop runs, so the watchdog watches it.
	syncing atomic.Bool

	mu sync.Mutex
	// loops are the Matrix side's main loops the watchdog watches,
	// added once they run: before, a loop that has not started would
	// look stuck.
	loops []systemd.Probe
}

// loginRetry is how long the Matrix side waits after a login failure that
// waiting within Login cannot fix (a wrong password, a deactivated
// account): the door goes on working, and the installer may fix the
// homeserver's side meanwhile without a restart.
const loginRetry = time.Minute

// setStage records what the side is doing for the status.
func (m *matrixSide) setStage(s string) { m.stage.Store(&s) }

// Stage is what the Matrix side waits for ("logging in", …); "" once up.
func (m *matrixSide) Stage() string {
	if p := m.stage.Load(); p != nil {
		return *p
	}
	return "starting"
}

// run brings the Matrix side up, starts its loops in g, and returns once
// they run (or ctx ends). hup carries SIGHUPs for the reloader, which
// starts with the side: a reload before that waits for it.
func (m *matrixSide) run(ctx context.Context, g *errgroup.Group, hup <-chan os.Signal) error {
	cfg, session, log := m.cfg, m.session, m.log
	// Login waits out an unreachable homeserver (a board often boots
	// before its network is up); what waiting cannot fix is retried
	// every loginRetry, the door working meanwhile.
	for {
		m.setStage("logging in")
		err := session.Login(ctx)
		if err == nil {
			break
		}
		if ctx.Err() != nil {
			return nil
		}
		m.setStage("login failed: " + err.Error())
		log.Error("log in failed; the door works without Matrix until it succeeds", "err", err, "retry_in", loginRetry)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(loginRetry):
		}
	}
	m.setStage("setting up the residents' rooms")
	var rooms map[callengine.UserID]callengine.RoomID
	if err := retry(ctx, log, "direct rooms", func() error {
		var err error
		if rooms, err = session.EnsureDirectRooms(ctx); err == nil {
			m.dir.set(rooms)
		}
		return err
	}); err != nil {
		return nil // ctx ended
	}

	// MatrixRTC ringing (rtcsetup.go): nil unless matrixrtc.enabled. Made
	// after login, which gives the device ID its identity needs, and
	// before the sync loop, whose filter must include its events.
	mrtc, err := newDaemonRTC(cfg, session, m.stream, m.hw, m.meter, m.hh, log)
	if err != nil {
		return err
	}
	if mrtc != nil {
		m.gate.follow(mrtc.runner)
		m.rtc.Store(mrtc)
	}

	calls := callengine.DefaultConfig(callengine.PartyID(session.DeviceID()))
	calls.RingTimeout = cfg.Ring.Timeout
	calls.LiveView = liveViewers(cfg)
	engine := callengine.NewEngine(callengine.EngineConfig{
		Machine:  calls,
		OwnUser:  session.UserID(),
		PoolSize: len(cfg.Residents),
		Logger:   log.With("component", "calls"),
	}, invitesTimed{Transport: m.gate.transport(session), sent: m.mets.inviteSent}, m.peers)

	// One rule for who rings and who wins (callengine/ring): a press
	// rings every path, the first answer on any path withdraws the rest.
	// MatrixRTC first: its Ring only hands the press to its loop, and
	// registers the rooms whose invites must wait for their ring
	// (ringsfirst.go); the classic invites leave as soon as they may.
	var lines []ring.PathLine
	if mrtc != nil {
		lines = append(lines, ring.PathLine{Path: ring.MatrixRTC, Line: mrtc.line()})
	}
	lines = append(lines, ring.PathLine{Path: ring.Direct, Line: engine})
	if m.hh != nil {
		lines = append(lines, ring.PathLine{Path: ring.Household, Line: m.hh})
	}
	// Residents may ask to be rung only one way (residents[].paths).
	paths := newRingPaths(cfg)
	rings := ring.NewCoordinator(ring.Config{Paths: lines, Rings: paths.rings, Logger: log.With("component", "ring")})

	// Encrypted rooms get their room keys shared ahead, off the path to
	// READY=1, so that a press costs one encryption per room, not a
	// round of key claims (matrix/e2ee.go).
	g.Go(func() error { prepareEncryption(ctx, session, rooms, log); return nil })
	g.Go(func() error { return engine.Run(ctx) })
	g.Go(func() error { return rings.Run(ctx) })
	m.syncing.Store(true)
	g.Go(func() error { return session.Run(ctx, m.doors.route(engine.HandleRoomEvent)) })
	g.Go(func() error {
		return runTURN(ctx, cfg, session, m.peers, engine.RefreshPool, log.With("component", "turn"))
	})
	if m.hh != nil {
		g.Go(func() error { return m.hh.Run(ctx) })
	}
	g.Go(func() error { return mrtc.Run(ctx, paths.rtcRooms(rooms)) })
	watched := []loop{{"call engine", engine}, {"ring coordinator", rings}}
	if m.hh != nil {
		watched = append(watched, loop{"household runner", m.hh})
	}
	if mrtc != nil {
		watched = append(watched, loop{"matrixrtc runner", mrtc.runner})
	}
	m.watch(watched...)
	reload := daemonTargets(cfg, session, m.dir, engine, m.doors.door, log)
	reload.ResidentPaths = paths.set
	g.Go(func() error { return newReloader(cfg, reload, log).Run(ctx, hup) })
	// The rooms' name and avatar (provision.go), best effort and off the
	// path to READY=1.
	g.Go(func() error { applyRoomLook(ctx, cfg, session, rooms, log.With("component", "rooms")); return nil })

	m.intercom.Attach(rings)
	m.setStage("")
	log.Info("intercom ready", "api", m.apiAddr, "api_token", cfg.API.Token != "", "residents", len(cfg.Residents),
		"user_id", session.UserID(), "device_id", session.DeviceID())
	return nil
}

// watch adds loops to the watchdog's probes.
func (m *matrixSide) watch(loops ...loop) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, l := range loops {
		m.loops = append(m.loops, heartbeatProbe(l.name, l.loop, loopHeartbeatWithin)...)
	}
}

// syncRunning reports whether the sync loop runs: before, the sync probe
// has nothing to watch (login may wait for minutes, and the door's loops
// are watched meanwhile).
func (m *matrixSide) syncRunning() bool { return m.syncing.Load() }

// check is the watchdog probe over the Matrix side's loops that run.
func (m *matrixSide) check(now time.Time) error {
	m.mu.Lock()
	loops := slices.Clone(m.loops)
	m.mu.Unlock()
	var errs []error
	for _, p := range loops {
		if err := p.Check(now); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", p.Name, err))
		}
	}
	return errors.Join(errs...)
}

// startStatus is the systemd STATUS= line before READY=1: the door runs,
// and what the Matrix side waits for.
func (m *matrixSide) startStatus() string {
	st := m.session.Status()
	msg := "door up; matrix: " + m.Stage()
	if m.Stage() == "" {
		msg = "door up; matrix: waiting for the first sync"
	}
	if !st.UnreachableSince.IsZero() {
		msg += "; homeserver unreachable since " + st.UnreachableSince.Format(time.RFC3339)
	}
	return msg
}

// noticeRooms is every room a missed visitor is told of when no room was
// known at the press: the residents' rooms and the household room.
func noticeRooms(dir *directory, hh *group.Runner) func() []callengine.RoomID {
	return func() []callengine.RoomID {
		var out []callengine.RoomID
		for _, r := range dir.get() {
			out = append(out, r.Room)
		}
		if hh != nil {
			for _, r := range hh.Rooms() {
				if r != "" && !slices.Contains(out, r) {
					out = append(out, r)
				}
			}
		}
		return out
	}
}
