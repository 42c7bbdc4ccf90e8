package daemon

import (
	"context"
	"errors"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/doorbell/intercom/callengine"
	"github.com/doorbell/intercom/device"
	"github.com/doorbell/intercom/gpio"
	"github.com/doorbell/intercom/matrix"
)

// The door's authorised users and pulse length change on a reload; the
// command texts and the reaction key are restart-only.
func TestReloadDoor(t *testing.T) {
	f := newReloadFixture(t, true)
	f.write(t, reloadBase+"door:\n  pulse: 5s\n  authorized: [\"@bob:example.org\"]\n  commands: [\"!door\"]\n")
	applied := f.r.reload(t.Context())
	if !slices.Equal(applied, []string{"door"}) {
		t.Fatalf("applied %v\n%s", applied, f.logs.String())
	}
	if len(f.doors) != 1 {
		t.Fatalf("door target called %d times", len(f.doors))
	}
	got := f.doors[0]
	if got.Pulse != 5*time.Second || !slices.Equal(got.Authorized, []callengine.UserID{"@bob:example.org"}) {
		t.Fatalf("door target got %+v", got)
	}
	if !slices.Equal(got.Commands, []string{"!open"}) {
		t.Fatalf("commands %v applied on reload; they are restart-only", got.Commands)
	}
	if c := f.r.cfg.Door; c.Pulse != 5*time.Second || !slices.Equal(c.Commands, []string{"!open"}) {
		t.Fatalf("running door config %+v", c)
	}
	if !strings.Contains(f.logs.String(), "door.commands") {
		t.Fatalf("restart-only door.commands not logged:\n%s", f.logs.String())
	}
	// Again: the pulse and users are in force; only the commands differ.
	if applied := f.r.reload(t.Context()); len(applied) != 0 || len(f.doors) != 1 {
		t.Fatalf("second reload applied %v", applied)
	}
}

// The call window (issue 19) is in force from the start with its default,
// reloads like the other door keys, and door.window: 0s leaves only the
// call (door.only_during_call).
func TestReloadDoorWindow(t *testing.T) {
	f := newReloadFixture(t, true)
	if c := doorPolicy(f.r.cfg); c.Window != 3*time.Minute || c.OnlyDuringCall {
		t.Fatalf("door policy at start %+v, want the 3m ring window", c)
	}
	for _, tt := range []struct {
		yaml   string
		window time.Duration
		only   bool
	}{
		{"door:\n  window: 10m\n", 10 * time.Minute, false},
		{"door:\n  window: 0s\n", 0, true},
		{"door:\n  window: 2m\n  only_during_call: true\n", 2 * time.Minute, true},
		{"", 3 * time.Minute, false},
	} {
		f.write(t, reloadBase+tt.yaml)
		n := len(f.doors)
		if applied := f.r.reload(t.Context()); !slices.Equal(applied, []string{"door"}) || len(f.doors) != n+1 {
			t.Fatalf("%q: applied %v\n%s", tt.yaml, applied, f.logs.String())
		}
		got := f.doors[n]
		if got.OnlyDuringCall != tt.only || (tt.window > 0 && got.Window != tt.window) {
			t.Fatalf("%q: door target got window %v only_during_call %v, want %v %v", tt.yaml, got.Window, got.OnlyDuringCall, tt.window, tt.only)
		}
	}
}

// One invalid value refuses the whole file: the valid changes next to it
// are not applied either.
func TestReloadDoorInvalidChangesNothing(t *testing.T) {
	f := newReloadFixture(t, true)
	before := f.r.cfg
	f.write(t, strings.Replace(strings.Replace(reloadBase,
		`["@alice:example.org"]`, `["@alice:example.org", "@bob:example.org"]`, 1),
		"timeout: 30s", "timeout: 45s", 1)+"door:\n  pulse: 45s\n  authorized: [\"@bob:example.org\"]\n")
	if applied := f.r.reload(t.Context()); applied != nil {
		t.Fatalf("applied %v", applied)
	}
	if f.r.cfg != before || len(f.residents)+len(f.timeouts)+len(f.doors) != 0 {
		t.Fatalf("a refused file reached the targets: %v %v %v", f.residents, f.timeouts, f.doors)
	}
	if !strings.Contains(f.logs.String(), "intercom.yaml:10: door.pulse") {
		t.Fatalf("problem not logged at FILE:LINE:\n%s", f.logs.String())
	}
}

// When the residents' rooms cannot be made, the door keeps authorising the
// old residents (door.authorized defaults to them).
func TestReloadDoorFollowsResidentsInForce(t *testing.T) {
	f := newReloadFixture(t, true)
	f.fail = errors.New("homeserver unreachable")
	f.write(t, strings.Replace(reloadBase, `["@alice:example.org"]`, `["@bob:example.org"]`, 1)+"door:\n  pulse: 4s\n")
	applied := f.r.reload(t.Context())
	if !slices.Equal(applied, []string{"door"}) || len(f.doors) != 1 {
		t.Fatalf("applied %v, door %v", applied, f.doors)
	}
	if got := f.doors[0]; got.Pulse != 4*time.Second || !slices.Equal(got.Authorized, []callengine.UserID{"@alice:example.org"}) {
		t.Fatalf("door got %+v, want the old resident authorised", got)
	}
}

// doorPolicy is the configuration newDoorParts starts the door with.
func TestDoorPolicyMatchesStart(t *testing.T) {
	f := newReloadFixture(t, false)
	session, err := matrix.New(matrix.Options{Homeserver: "http://127.0.0.1:1", Store: stateStore{}})
	if err != nil {
		t.Fatal(err)
	}
	relay, err := gpio.NewRelay(gpio.SimPin("RELAY"), gpio.ActiveHigh)
	if err != nil {
		t.Fatal(err)
	}
	cfg := *f.r.cfg
	cfg.StateDir = ""
	parts, err := newDoorParts(&cfg, session, relay, nil, nil, nil, nil, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	want := parts.door.Config()
	got := doorPolicy(&cfg)
	got.MaxAge = want.MaxAge // a policy default, not a configuration key
	if !equalDoor(got, want) {
		t.Fatalf("doorPolicy %+v\nstart      %+v", got, want)
	}
}

func equalDoor(a, b device.DoorConfig) bool {
	return slices.Equal(a.Commands, b.Commands) && a.ReactionKey == b.ReactionKey && a.Pulse == b.Pulse &&
		slices.Equal(a.Authorized, b.Authorized) && a.OnlyDuringCall == b.OnlyDuringCall &&
		a.Window == b.Window && a.ReplyUnauthorized == b.ReplyUnauthorized && a.MaxAge == b.MaxAge
}

// fakeResidentSession is the Matrix session as a residents reload sees it.
type fakeResidentSession struct {
	mu        sync.Mutex
	residents []callengine.UserID
	roomsErr  error
	looks     []callengine.RoomID
}

func (s *fakeResidentSession) Residents() []callengine.UserID {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.residents)
}

func (s *fakeResidentSession) SetResidents(rs []callengine.UserID) error {
	for _, r := range rs {
		if !strings.HasPrefix(string(r), "@") {
			return errors.New("bad user ID")
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.residents = slices.Clone(rs)
	return nil
}

func (s *fakeResidentSession) EnsureDirectRooms(context.Context) (map[callengine.UserID]callengine.RoomID, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.roomsErr != nil {
		return nil, s.roomsErr
	}
	out := map[callengine.UserID]callengine.RoomID{}
	for _, r := range s.residents {
		out[r] = callengine.RoomID("!" + strings.TrimPrefix(string(r), "@"))
	}
	return out, nil
}

func (s *fakeResidentSession) EnsureRoomLook(_ context.Context, room callengine.RoomID, _ matrix.RoomLook) ([]string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.looks = append(s.looks, room)
	return nil, nil
}

type recordingEngine struct {
	mu sync.Mutex
	d  []time.Duration
}

func (e *recordingEngine) SetRingTimeout(d time.Duration) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.d = append(e.d, d)
}

// A reload through the daemon's own wiring: the running Matrix session,
// the press directory, a running door and the engine's setter. A reload
// whose rooms cannot be made puts the session's residents back and leaves
// the directory and the door as they were; a good one changes all three.
func TestDaemonTargets(t *testing.T) {
	f := newReloadFixture(t, false)
	cfg := f.r.cfg
	session := &fakeResidentSession{residents: []callengine.UserID{"@alice:example.org"}}
	dir := &directory{}
	dir.set(map[callengine.UserID]callengine.RoomID{"@alice:example.org": "!alice:example.org"})
	relay, err := gpio.NewRelay(gpio.SimPin("RELAY"), gpio.ActiveHigh)
	if err != nil {
		t.Fatal(err)
	}
	door, err := device.NewDoor(device.DoorOptions{Policy: doorPolicy(cfg), Relay: relay})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- door.Run(ctx) }()
	defer func() { cancel(); <-done }()
	engine := &recordingEngine{}
	f.r.targets = daemonTargets(cfg, session, dir, engine, door, slog.New(slog.NewTextHandler(f.logs, nil)))

	next := strings.Replace(strings.Replace(reloadBase,
		`["@alice:example.org"]`, `["@alice:example.org", "@bob:example.org"]`, 1),
		"timeout: 30s", "timeout: 45s", 1) + "door:\n  pulse: 5s\n"

	session.roomsErr = errors.New("homeserver unreachable")
	f.write(t, next)
	if applied := f.r.reload(t.Context()); !slices.Equal(applied, []string{"door", "ring.timeout"}) {
		t.Fatalf("applied %v\n%s", applied, f.logs.String())
	}
	if got := session.Residents(); !slices.Equal(got, []callengine.UserID{"@alice:example.org"}) {
		t.Fatalf("session residents %v after failed rooms, want the old ones back", got)
	}
	if got := dir.get(); len(got) != 1 {
		t.Fatalf("directory %v after failed rooms", got)
	}
	waitUntil(t, "door pulse 5s", func() bool { return door.Config().Pulse == 5*time.Second })
	if got := door.Config().Authorized; !slices.Equal(got, []callengine.UserID{"@alice:example.org"}) {
		t.Fatalf("door authorised %v, want alice only while bob has no room", got)
	}

	session.roomsErr = nil
	if applied := f.r.reload(t.Context()); !slices.Equal(applied, []string{"residents", "door"}) {
		t.Fatalf("second reload applied %v\n%s", applied, f.logs.String())
	}
	if got := session.Residents(); len(got) != 2 {
		t.Fatalf("session residents %v", got)
	}
	if got := dir.get(); len(got) != 2 || got[1].Room != "!bob:example.org" {
		t.Fatalf("directory %v", got)
	}
	waitUntil(t, "bob authorised", func() bool { return len(door.Config().Authorized) == 2 })
	if !slices.Equal(engine.d, []time.Duration{45 * time.Second}) {
		t.Fatalf("engine got ring timeouts %v", engine.d)
	}
	if len(session.looks) != 2 {
		t.Fatalf("room look applied to %v, want both rooms", session.looks)
	}
}

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
