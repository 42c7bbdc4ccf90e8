package daemon

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/doorbell/intercom/callengine"
	"github.com/doorbell/intercom/device"
	"github.com/doorbell/intercom/provisioning"
)

const reloadBase = `matrix:
  homeserver: http://127.0.0.1:8008
  user_id: "@door:example.org"
  password_file: ./password
state_dir: ./state
residents: ["@alice:example.org"]
ring:
  timeout: 30s
`

// reloadFixture writes a config, loads it and returns a reloader whose
// targets record what they were asked.
type reloadFixture struct {
	path      string
	r         *reloader
	logs      *lockedBuffer
	residents [][]string
	timeouts  []time.Duration
	doors     []device.DoorConfig
	fail      error
}

func newReloadFixture(t *testing.T, withTimeoutSetter bool) *reloadFixture {
	t.Helper()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "password"), []byte("secret-password"), 0o600); err != nil {
		t.Fatal(err)
	}
	f := &reloadFixture{path: filepath.Join(dir, "intercom.yaml"), logs: &lockedBuffer{}}
	f.write(t, reloadBase)
	cfg, err := provisioning.Load(f.path)
	if err != nil {
		t.Fatal(err)
	}
	targets := reloadTargets{Residents: func(_ context.Context, rs []string) error {
		if f.fail != nil {
			return f.fail
		}
		f.residents = append(f.residents, rs)
		return nil
	}}
	if withTimeoutSetter {
		targets.RingTimeout = func(d time.Duration) { f.timeouts = append(f.timeouts, d) }
		targets.Door = func(c device.DoorConfig) { f.doors = append(f.doors, c) }
	}
	f.r = &reloader{cfg: cfg, targets: targets, log: slog.New(slog.NewTextHandler(f.logs, nil)), load: provisioning.Load}
	return f
}

func (f *reloadFixture) write(t *testing.T, cfg string) {
	t.Helper()
	if err := os.WriteFile(f.path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
}

func TestReloadAppliesResidentsAndTimeout(t *testing.T) {
	f := newReloadFixture(t, true)
	f.write(t, strings.Replace(strings.Replace(reloadBase,
		`["@alice:example.org"]`, `["@alice:example.org", "@bob:example.org"]`, 1),
		"timeout: 30s", "timeout: 45s", 1))
	applied := f.r.reload(t.Context())
	// door.authorized defaults to the residents, so the door follows.
	if !slices.Equal(applied, []string{"residents", "door", "ring.timeout"}) {
		t.Fatalf("applied %v\n%s", applied, f.logs.String())
	}
	if len(f.doors) != 1 || !slices.Equal(f.doors[0].Authorized, []callengine.UserID{"@alice:example.org", "@bob:example.org"}) {
		t.Fatalf("door target got %+v", f.doors)
	}
	if len(f.residents) != 1 || !slices.Equal(f.residents[0], []string{"@alice:example.org", "@bob:example.org"}) {
		t.Fatalf("residents target got %v", f.residents)
	}
	if !slices.Equal(f.timeouts, []time.Duration{45 * time.Second}) {
		t.Fatalf("ring timeout target got %v", f.timeouts)
	}
	if got := f.r.cfg.Residents; len(got) != 2 {
		t.Fatalf("running config residents %v", got)
	}
	if !strings.Contains(f.logs.String(), `msg=reloaded`) {
		t.Fatalf("outcome not logged:\n%s", f.logs.String())
	}
	// The same file again: nothing to do.
	if applied := f.r.reload(t.Context()); len(applied) != 0 {
		t.Fatalf("second reload applied %v", applied)
	}
}

// A file with problems changes nothing and says why, with FILE:LINE.
func TestReloadKeepsConfigOnError(t *testing.T) {
	f := newReloadFixture(t, true)
	before := f.r.cfg
	f.write(t, strings.Replace(reloadBase, `["@alice:example.org"]`, `["alice"]`, 1)+"ring:\n  timeout: 5s\n")
	if applied := f.r.reload(t.Context()); applied != nil {
		t.Fatalf("applied %v from a broken file", applied)
	}
	if f.r.cfg != before || len(f.residents) != 0 || len(f.timeouts) != 0 || len(f.doors) != 0 {
		t.Fatal("a broken file changed the running configuration")
	}
	logs := f.logs.String()
	for _, want := range []string{"reload refused; keeping the running configuration", "intercom.yaml:6: residents"} {
		if !strings.Contains(logs, want) {
			t.Errorf("log lacks %q:\n%s", want, logs)
		}
	}
}

// Rooms that cannot be made keep the old residents; a timeout the engine
// cannot change and a restart-only change are logged, not applied.
func TestReloadPartial(t *testing.T) {
	f := newReloadFixture(t, false)
	f.fail = errors.New("homeserver unreachable")
	f.write(t, strings.Replace(strings.Replace(reloadBase,
		`["@alice:example.org"]`, `["@bob:example.org"]`, 1),
		"timeout: 30s", "timeout: 45s", 1)+"api:\n  listen: 127.0.0.1:9999\n")
	if applied := f.r.reload(t.Context()); len(applied) != 0 {
		t.Fatalf("applied %v", applied)
	}
	if got := f.r.cfg.Residents; !slices.Equal(got, []string{"@alice:example.org"}) {
		t.Fatalf("residents %v after a failed reload, want the old ones", got)
	}
	if f.r.cfg.Ring.Timeout != 30*time.Second {
		t.Fatalf("ring timeout %v recorded though not applied", f.r.cfg.Ring.Timeout)
	}
	logs := f.logs.String()
	for _, want := range []string{"residents not changed", "ring.timeout takes effect only after a restart", "sections=[API]"} {
		if !strings.Contains(logs, want) {
			t.Errorf("log lacks %q:\n%s", want, logs)
		}
	}
	if strings.Contains(logs, "secret-password") {
		t.Fatal("reload logged the password")
	}
}

// A resident's paths change from the next press, without a restart.
func TestReloadAppliesResidentPaths(t *testing.T) {
	f := newReloadFixture(t, true)
	var got []map[string][]string
	f.r.targets.ResidentPaths = func(p map[string][]string) { got = append(got, p) }
	f.write(t, strings.Replace(reloadBase, `["@alice:example.org"]`, `[{user_id: "@alice:example.org", paths: [classic]}]`, 1))
	if applied := f.r.reload(t.Context()); !slices.Equal(applied, []string{"residents.paths"}) {
		t.Fatalf("applied %v\n%s", applied, f.logs.String())
	}
	if len(got) != 1 || !slices.Equal(got[0]["@alice:example.org"], []string{"classic"}) {
		t.Fatalf("paths target got %v", got)
	}
	if strings.Contains(f.logs.String(), "restart") {
		t.Errorf("paths reported as needing a restart:\n%s", f.logs.String())
	}
	if applied := f.r.reload(t.Context()); len(applied) != 0 {
		t.Fatalf("second reload applied %v", applied)
	}
}
