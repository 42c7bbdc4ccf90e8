package daemon

import (
	"context"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"testing/synctest"

	"github.com/doorbell/intercom/callengine"
	"github.com/doorbell/intercom/callengine/ring"
	"github.com/doorbell/intercom/provisioning"
)

func TestRingPaths(t *testing.T) {
	p := newRingPaths(&provisioning.Config{ResidentPaths: map[string][]string{
		"@x:h": {provisioning.PathMatrixRTC}, "@c:h": {provisioning.PathClassic},
	}})
	for _, tt := range []struct {
		user                     callengine.UserID
		direct, rtc, householdOK bool
	}{
		{"@b:h", true, true, true}, // no paths: both
		{"@x:h", false, true, true},
		{"@c:h", true, false, true},
	} {
		if p.rings(ring.Direct, tt.user) != tt.direct || p.rings(ring.MatrixRTC, tt.user) != tt.rtc || !p.rings(ring.Household, tt.user) {
			t.Errorf("%s: direct %v matrixrtc %v household %v", tt.user, p.rings(ring.Direct, tt.user), p.rings(ring.MatrixRTC, tt.user), p.rings(ring.Household, tt.user))
		}
	}
	rooms := p.rtcRooms(map[callengine.UserID]callengine.RoomID{"@b:h": "!b", "@x:h": "!x", "@c:h": "!c"})
	if len(rooms) != 2 || rooms["@c:h"] != "" {
		t.Errorf("MatrixRTC rooms %v: want all but the classic-only resident's", rooms)
	}
	// A reload switches the paths from the next press.
	p.set(nil)
	if !p.rings(ring.Direct, "@x:h") {
		t.Error("paths not replaced")
	}
}

// The intercom's power in each room MatrixRTC rings: a problem is
// logged once when it appears and once when it goes, and shown only for
// rooms MatrixRTC rings.
func TestRoomPushes(t *testing.T) {
	var logs lockedBuffer
	p := roomPushes{log: slog.New(slog.NewTextHandler(&logs, nil)), self: "@door:h"}
	low := []byte(`{"users":{"@carol:h":100},"users_default":0}`)
	p.levels("!porch", low) // seen by sync before the chores ring it
	p.levels("!dm", []byte(`{"users":{"@door:h":100,"@alice:h":100}}`))
	p.levels("!classic", low) // a room MatrixRTC does not ring
	if st := p.status(); len(st) != 0 {
		t.Fatalf("status before any room is rung: %+v", st)
	}
	p.rung("!porch")
	p.rung("!dm")
	p.levels("!porch", low) // the same levels again
	st := p.status()
	if len(st) != 2 || st[0].Room != "!dm" || st[0].Power != 100 || st[0].Problem != "" ||
		st[1].Room != "!porch" || st[1].Power != 0 || st[1].RoomNotify != 50 || !strings.HasPrefix(st[1].Problem, "cannot @room-notify: power 0 < 50") {
		t.Fatalf("status %+v", st)
	}
	if n := strings.Count(logs.String(), "may not push"); n != 1 {
		t.Errorf("problem logged %d times, want once:\n%s", n, logs.String())
	}
	p.levels("!porch", []byte(`{"users":{"@door:h":"50"}}`))
	if st := p.status(); st[1].Problem != "" || !strings.Contains(logs.String(), "may @room-notify here now") {
		t.Errorf("raised power not seen: %+v\n%s", st, logs.String())
	}
	p.levels("!dm", []byte(`{"users":{"@door:h":1.5}}`))
	if st := p.status(); !strings.Contains(st[0].Problem, "cannot read the room's power levels") {
		t.Errorf("malformed levels: %+v", st[0])
	}
}

// fakeRingsOut is the MatrixRTC runner as the gate sees it: all is what
// RingsOut returns, rooms what RingOut does (closed for other rooms).
type fakeRingsOut struct {
	all   chan struct{}
	rooms map[callengine.RoomID]chan struct{}
}

func (f fakeRingsOut) RingsOut() <-chan struct{} { return f.all }

func (f fakeRingsOut) RingOut(room callengine.RoomID) <-chan struct{} {
	if c, ok := f.rooms[room]; ok {
		return c
	}
	c := make(chan struct{})
	close(c)
	return c
}

// The ring notices wait for the MatrixRTC rings; without MatrixRTC they
// do not wait at all.
func TestRingsFirst(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var g *ringsFirst
		g.wait(t.Context()) // nil: MatrixRTC off
		g = &ringsFirst{}
		g.wait(t.Context()) // nothing to follow yet
		out := make(chan struct{})
		g.follow(fakeRingsOut{all: out})
		done := make(chan struct{})
		go func() { g.wait(t.Context()); close(done) }()
		synctest.Wait()
		select {
		case <-done:
			t.Fatal("did not wait for the rings")
		default:
		}
		close(out)
		<-done
		ctx, cancel := context.WithCancel(t.Context())
		cancel()
		g.follow(fakeRingsOut{all: make(chan struct{})})
		g.wait(ctx) // a cancelled post does not wait
	})
}

// recordingTransport records the classic engine's sends.
type recordingTransport struct {
	mu   sync.Mutex
	sent []string
}

func (r *recordingTransport) SendRoomEvent(_ context.Context, room callengine.RoomID, eventType string, _ any) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.sent = append(r.sent, string(room)+" "+eventType)
	return nil
}

func (r *recordingTransport) got() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.sent)
}

// A classic invite waits for its own room's MatrixRTC ring (issue 18: it
// went ahead of the membership and the ring at the homeserver); an
// invite into a room MatrixRTC does not ring, and every other event, go
// at once; without MatrixRTC nothing waits.
func TestRingsFirstInvites(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		rec := &recordingTransport{}
		var off *ringsFirst
		if err := off.transport(rec).SendRoomEvent(t.Context(), "!dm", callengine.TypeInvite, nil); err != nil {
			t.Fatal(err)
		}
		g := &ringsFirst{}
		dm := make(chan struct{})
		g.follow(fakeRingsOut{all: make(chan struct{}), rooms: map[callengine.RoomID]chan struct{}{"!dm": dm}})
		tr := g.transport(rec)
		done := make(chan struct{})
		go func() {
			_ = tr.SendRoomEvent(t.Context(), "!dm", callengine.TypeInvite, nil)
			close(done)
		}()
		_ = tr.SendRoomEvent(t.Context(), "!classic", callengine.TypeInvite, nil)
		_ = tr.SendRoomEvent(t.Context(), "!dm", callengine.TypeHangup, nil)
		synctest.Wait()
		if got, want := rec.got(), []string{"!dm m.call.invite", "!classic m.call.invite", "!dm m.call.hangup"}; !slices.Equal(got, want) {
			t.Fatalf("sent before the ring left: %q, want %q", got, want)
		}
		close(dm)
		<-done
		if got := rec.got(); got[len(got)-1] != "!dm m.call.invite" {
			t.Fatalf("invite not sent once the ring left: %q", got)
		}
	})
}
