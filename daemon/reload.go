package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"reflect"
	"slices"
	"syscall"
	"time"

	"github.com/doorbell/intercom/callengine"
	"github.com/doorbell/intercom/device"
	"github.com/doorbell/intercom/matrix"
	"github.com/doorbell/intercom/provisioning"
)

// SIGHUP (systemctl reload) re-reads the configuration file and applies
// what can change without a restart: the residents and their paths
// (rooms for new ones are made first; removed ones stop ringing at once,
// and only the new set's room invites are joined; a resident's room that
// newly takes MatrixRTC gets its room chores at the next start), the door policy (authorised users, pulse
// length, call window, replies; not the command texts and the reaction
// key, which the ring notices announce) and the ring timeout (from the
// next ring). The file is validated first; a file with problems changes
// nothing, and the running configuration stays. Changes to anything else
// are logged as needing a restart.

// reloadSignals starts catching SIGHUP. It is called first thing in the
// daemon: SIGHUP's default action ends the process, and a reload sent
// during start-up must not kill the intercom.
func reloadSignals() (<-chan os.Signal, func()) {
	ch := make(chan os.Signal, 1)
	signal.Notify(ch, syscall.SIGHUP)
	return ch, func() { signal.Stop(ch) }
}

// reloadTargets are the running parts a reload changes. A nil target means
// the running build cannot change that setting.
type reloadTargets struct {
	// Residents switches whom to ring. It returns only once every resident
	// has a room; on error nothing changed.
	Residents func(ctx context.Context, residents []string) error
	// RingTimeout changes how long later rings last.
	RingTimeout func(time.Duration)
	// ResidentPaths changes which paths ring which resident from the
	// next press (residents[].paths).
	ResidentPaths func(map[string][]string)
	// Door replaces the door policy's configuration; its memory stays.
	Door func(device.DoorConfig)
}

// residentSession is what a residents reload needs of the Matrix session.
type residentSession interface {
	Residents() []callengine.UserID
	SetResidents([]callengine.UserID) error
	EnsureDirectRooms(ctx context.Context) (map[callengine.UserID]callengine.RoomID, error)
	EnsureRoomLook(ctx context.Context, room callengine.RoomID, look matrix.RoomLook) ([]string, error)
}

// daemonTargets wires a reload to the daemon's running parts: the residents
// go to the running Matrix session (which then makes their rooms and
// accepts their invites) and into the press directory, the ring timeout to
// the engine, the door policy to the door runner.
func daemonTargets(cfg *provisioning.Config, session residentSession, dir *directory, engine interface{ SetRingTimeout(time.Duration) }, door interface{ SetConfig(device.DoorConfig) }, log *slog.Logger) reloadTargets {
	log = log.With("component", "reload")
	return reloadTargets{
		Residents: func(ctx context.Context, residents []string) error {
			old := session.Residents()
			if err := session.SetResidents(userIDs(residents)); err != nil {
				return err
			}
			rooms, err := session.EnsureDirectRooms(ctx)
			if err != nil {
				// Back to the old set, so invites are judged as before.
				if rerr := session.SetResidents(old); rerr != nil {
					log.Error("reload: restore residents", "err", rerr)
				}
				return err
			}
			dir.set(rooms)
			// New rooms are named at creation; the avatar is best effort.
			applyRoomLook(ctx, cfg, session, rooms, log)
			return nil
		},
		RingTimeout: engine.SetRingTimeout,
		Door:        door.SetConfig,
	}
}

func userIDs(us []string) []callengine.UserID {
	out := make([]callengine.UserID, len(us))
	for i, u := range us {
		out[i] = callengine.UserID(u)
	}
	return out
}

// doorPolicy is the door policy a configuration describes, at start and
// on a reload: door.authorized defaults to the residents, and
// door.window: 0s closes the ring window (commands only during a call),
// where the policy's zero Window would mean its default.
func doorPolicy(cfg *provisioning.Config) device.DoorConfig {
	authorized := cfg.Door.Authorized
	if len(authorized) == 0 {
		authorized = cfg.Residents
	}
	return device.DoorConfig{
		Commands: cfg.Door.Commands, ReactionKey: cfg.Door.Reaction, Pulse: cfg.Door.Pulse,
		Authorized: userIDs(authorized), Window: cfg.Door.Window,
		OnlyDuringCall:     cfg.Door.OnlyDuringCall || cfg.Door.Window == 0,
		ReplyUnauthorized:  cfg.Door.ReplyUnauthorized,
		RequireCrossSigned: cfg.Door.RequireCrossSigned,
	}
}

// reloader applies SIGHUPs one at a time on its own goroutine.
type reloader struct {
	cfg     *provisioning.Config
	targets reloadTargets
	log     *slog.Logger
	load    func(path string) (*provisioning.Config, error)
}

// newReloader returns a reloader for the running configuration cfg.
func newReloader(cfg *provisioning.Config, t reloadTargets, log *slog.Logger) *reloader {
	return &reloader{cfg: cfg, targets: t, log: log.With("component", "reload"), load: provisioning.Load}
}

// Run applies a reload for every signal on sig until ctx ends.
func (r *reloader) Run(ctx context.Context, sig <-chan os.Signal) error {
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-sig:
			r.reload(ctx)
		}
	}
}

// reloadTimeout bounds the room work of one reload, so a homeserver that
// does not answer cannot block the next SIGHUP for ever.
const reloadTimeout = time.Minute

// reload reads, validates and applies the configuration file once. It
// returns what it applied, for tests.
func (r *reloader) reload(ctx context.Context) (applied []string) {
	old := r.cfg
	next, err := r.load(old.Path)
	if err != nil {
		var ps provisioning.Problems
		if errors.As(err, &ps) {
			for _, p := range ps {
				r.log.Error("reload: config problem", "problem", p.String())
			}
			err = fmt.Errorf("%d problem(s)", len(ps))
		}
		r.log.Error("reload refused; keeping the running configuration", "config", old.Path, "err", err)
		return nil
	}
	for _, w := range next.Warnings {
		r.log.Warn("reload: config", "problem", w.String())
	}
	restart := restartOnly(old, next)
	// The command texts and the reaction key are announced in every ring
	// notice, whose text is composed at start.
	if !slices.Equal(old.Door.Commands, next.Door.Commands) {
		restart = append(restart, "door.commands")
	}
	if old.Door.Reaction != next.Door.Reaction {
		restart = append(restart, "door.reaction")
	}
	if len(restart) > 0 {
		r.log.Warn("reload: changes that take effect only after a restart", "sections", restart)
	}
	merged := *old
	var failed []string
	if !slices.Equal(old.Residents, next.Residents) {
		ctx, cancel := context.WithTimeout(ctx, reloadTimeout)
		err := r.targets.Residents(ctx, next.Residents)
		cancel()
		if err != nil {
			r.log.Error("reload: residents not changed", "err", err)
			failed = append(failed, "residents")
		} else {
			merged.Residents = next.Residents
			applied = append(applied, "residents")
		}
	}
	if !reflect.DeepEqual(old.ResidentPaths, next.ResidentPaths) {
		if r.targets.ResidentPaths == nil {
			r.log.Warn("reload: residents' paths take effect only after a restart")
		} else {
			r.targets.ResidentPaths(next.ResidentPaths)
			merged.ResidentPaths = next.ResidentPaths
			applied = append(applied, "residents.paths")
		}
	}
	// The door follows the residents actually in force (door.authorized
	// defaults to them), so a failed residents change leaves it too.
	door := old.Door
	door.Pulse, door.Authorized = next.Door.Pulse, next.Door.Authorized
	door.OnlyDuringCall, door.Window, door.ReplyUnauthorized = next.Door.OnlyDuringCall, next.Door.Window, next.Door.ReplyUnauthorized
	nextDoor := merged
	nextDoor.Door = door
	if !reflect.DeepEqual(doorPolicy(old), doorPolicy(&nextDoor)) {
		if r.targets.Door == nil {
			r.log.Warn("reload: door settings take effect only after a restart")
		} else {
			r.targets.Door(doorPolicy(&nextDoor))
			merged.Door = door
			applied = append(applied, "door")
		}
	}
	if old.Ring.Timeout != next.Ring.Timeout {
		if r.targets.RingTimeout == nil {
			r.log.Warn("reload: ring.timeout takes effect only after a restart (the call engine cannot change it while running)",
				"running", old.Ring.Timeout, "file", next.Ring.Timeout)
		} else {
			r.targets.RingTimeout(next.Ring.Timeout)
			merged.Ring.Timeout = next.Ring.Timeout
			applied = append(applied, "ring.timeout")
		}
	}
	r.cfg = &merged
	switch {
	case len(failed) > 0:
		r.log.Error("reload partly failed; the rest applied", "applied", applied, "failed", failed)
	case len(applied) == 0:
		r.log.Info("reload: nothing to change", "config", old.Path)
	default:
		r.log.Info("reloaded", "config", old.Path, "applied", applied, "residents", merged.Residents,
			"ring_timeout", merged.Ring.Timeout, "door_pulse", merged.Door.Pulse, "door_authorized", doorPolicy(&merged).Authorized)
	}
	return applied
}

// restartOnly names the sections of the configuration that changed and
// that a reload does not apply. It looks at every exported field, so keys
// added later are covered without touching this function.
func restartOnly(old, next *provisioning.Config) []string {
	// Door is compared key by key in reload (commands and reaction are
	// restart-only).
	reloadable := map[string]bool{"Path": true, "Warnings": true, "Residents": true, "ResidentPaths": true, "Ring": true, "Door": true}
	a, b := reflect.ValueOf(*old), reflect.ValueOf(*next)
	var changed []string
	for i := range a.NumField() {
		f := a.Type().Field(i)
		if !f.IsExported() || reloadable[f.Name] {
			continue
		}
		if !reflect.DeepEqual(a.Field(i).Interface(), b.Field(i).Interface()) {
			changed = append(changed, f.Name)
		}
	}
	return changed
}
