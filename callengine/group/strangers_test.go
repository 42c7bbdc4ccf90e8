package group

import (
	"context"
	"log/slog"
	"sync"
	"testing"
	"testing/synctest"

	"github.com/doorbell/intercom/callengine"
)

// Issue 19, finding 8: anyone on Matrix can send the intercom to-device
// events; those of strangers are logged at debug, not info, so they
// cannot flood the log. A member's odd event stays at info.

// records is a slog.Handler keeping every record's level and message.
type records struct {
	mu  sync.Mutex
	got []slog.Record
}

func (r *records) Enabled(context.Context, slog.Level) bool { return true }
func (r *records) Handle(_ context.Context, rec slog.Record) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.got = append(r.got, rec)
	return nil
}
func (r *records) WithAttrs([]slog.Attr) slog.Handler { return r }
func (r *records) WithGroup(string) slog.Handler      { return r }

// ignored returns the levels of "household event ignored" records whose
// user_id is user.
func (r *records) ignored(user callengine.UserID) []slog.Level {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []slog.Level
	for _, rec := range r.got {
		if rec.Message != "household event ignored" {
			continue
		}
		rec.Attrs(func(a slog.Attr) bool {
			if a.Key == "user_id" && a.Value.String() == string(user) {
				out = append(out, rec.Level)
			}
			return true
		})
	}
	return out
}

func TestStrangersToDeviceLoggedAtDebug(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		logs := &records{}
		h := startRunnerLogged(t, slog.New(logs), membershipOf(fxTablet, fxTabletDev, fxTabletSes))
		if err := h.r.Ring(t.Context(), nil); err != nil {
			t.Fatal(err)
		}
		synctest.Wait()
		const stranger = callengine.UserID("@mallory:evil.example")
		ev := toDevice(FamilyFamedly, "invite", "EVIL", "evil-session", fxSession, 0, invite("call-evil"))
		h.r.HandleToDevice(stranger, ev.Type, ev.Content)
		h.r.HandleToDevice(stranger, "com.famedly.call.member.invite", []byte(`{"not":"a call"}`))
		// The tablet, a member, with a stale session.
		ev = toDevice(FamilyFamedly, "invite", fxTabletDev, "old-session", fxSession, 0, invite("call-stale"))
		h.r.HandleToDevice(fxTablet, ev.Type, ev.Content)
		synctest.Wait()
		if got := logs.ignored(stranger); len(got) != 2 || got[0] != slog.LevelDebug || got[1] != slog.LevelDebug {
			t.Fatalf("stranger's to-device events logged at %v, want debug twice", got)
		}
		if got := logs.ignored(fxTablet); len(got) != 1 || got[0] != slog.LevelInfo {
			t.Fatalf("member's stale to-device event logged at %v, want info", got)
		}
	})
}
