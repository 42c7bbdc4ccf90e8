package main

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

	"github.com/doorbell/intercom/provisioning"
)

// SIGHUP (systemctl reload) re-reads the configuration file and applies
// what can change without a restart: the residents (rooms for new ones are
// made first; removed ones stop ringing at once) and, where the call engine
// allows it, the ring timeout. The file is validated first; a file with
// problems changes nothing, and the running configuration stays. Changes
// to anything else are logged as needing a restart.

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
}

// reloader applies SIGHUPs one at a time on its own goroutine.
type reloader struct {
	cfg     *provisioning.Config
	targets reloadTargets
	log     *slog.Logger
	load    func(path string) (*provisioning.Config, error)
}

// newReloader wires a reload to the daemon's parts: the residents go
// through a short-lived Matrix session that makes their rooms (the same
// EnsureDirectRooms as at start) and then into the press directory; the
// ring timeout goes to the engine if it has a setter.
func newReloader(cfg *provisioning.Config, state *provisioning.State, dir *directory, engine any, log *slog.Logger) *reloader {
	log = log.With("component", "reload")
	t := reloadTargets{
		Residents: func(ctx context.Context, residents []string) error {
			c := *cfg
			c.Residents = residents
			s, err := newSession(&c, state, log)
			if err != nil {
				return err
			}
			defer s.Close()
			if err := s.Login(ctx); err != nil {
				return fmt.Errorf("log in: %w", err)
			}
			rooms, err := s.EnsureDirectRooms(ctx)
			if err != nil {
				return err
			}
			dir.set(rooms)
			return nil
		},
	}
	if e, ok := engine.(interface{ SetRingTimeout(time.Duration) }); ok {
		t.RingTimeout = e.SetRingTimeout
	}
	return &reloader{cfg: cfg, targets: t, log: log, load: provisioning.Load}
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
	if keys := restartOnly(old, next); len(keys) > 0 {
		r.log.Warn("reload: changes that take effect only after a restart", "sections", keys)
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
		r.log.Info("reloaded", "config", old.Path, "applied", applied, "residents", merged.Residents, "ring_timeout", merged.Ring.Timeout)
	}
	return applied
}

// restartOnly names the sections of the configuration that changed and
// that a reload does not apply. It looks at every exported field, so keys
// added later are covered without touching this function.
func restartOnly(old, next *provisioning.Config) []string {
	reloadable := map[string]bool{"Path": true, "Warnings": true, "Residents": true, "Ring": true}
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
