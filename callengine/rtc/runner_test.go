package rtc

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"maps"
	"slices"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/doorbell/intercom/callengine"
	"github.com/doorbell/intercom/callengine/group"
)

var roomH = callengine.RoomID("!household:example.org")

// fakeTransport is the in-memory stand-in for the Matrix session: it
// records every state event and room event, in order.
type fakeTransport struct {
	mu     sync.Mutex
	puts   []sentState
	events []sentEvent
	n      int
	// hold, if set, keeps every put from the holdFrom-th on (only those
	// in holdRoom, if set) waiting until it is closed (a slow
	// homeserver).
	hold     chan struct{}
	holdFrom int
	holdRoom callengine.RoomID
	toDevice []sentToDevice
	requests int // SendEncryptedToDevices calls
}

type sentToDevice struct {
	Type    string
	To      Device
	Content json.RawMessage
}

func (f *fakeTransport) SendEncryptedToDevices(_ context.Context, typ string, to map[callengine.UserID][]string, content any) error {
	b, _ := json.Marshal(content)
	f.mu.Lock()
	defer f.mu.Unlock()
	f.requests++
	for _, user := range slices.Sorted(maps.Keys(to)) {
		for _, device := range to[user] {
			f.toDevice = append(f.toDevice, sentToDevice{Type: typ, To: Device{User: user, DeviceID: device}, Content: b})
		}
	}
	return nil
}

// sentCount is a mark for sentSince: the to-device sends and requests so far.
func (f *fakeTransport) sentCount() [2]int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return [2]int{len(f.toDevice), f.requests}
}

// sentSince returns the to-device sends after mark, and in how many
// requests they went.
func (f *fakeTransport) sentSince(mark [2]int) ([]sentToDevice, int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.toDevice[mark[0]:]), f.requests - mark[1]
}

func (f *fakeTransport) sentToDevice() []sentToDevice {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.toDevice)
}

type sentState struct {
	ID       string
	Room     callengine.RoomID
	StateKey string
	Content  json.RawMessage
}

// cleared reports whether the content is a leave ({}).
func (s sentState) cleared() bool { return string(s.Content) == "{}" }

type sentEvent struct {
	ID   string
	Room callengine.RoomID
	Type string
	// RelatesTo is the event the notification references.
	RelatesTo string
}

func (f *fakeTransport) PutState(_ context.Context, room callengine.RoomID, typ, key string, content any) (string, error) {
	b, _ := json.Marshal(content)
	f.mu.Lock()
	hold := f.hold != nil && f.n+1 >= f.holdFrom && (f.holdRoom == "" || f.holdRoom == room)
	f.mu.Unlock()
	if hold {
		<-f.hold
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if typ != TypeMember {
		return "", errors.New("unexpected state type " + typ)
	}
	f.n++
	id := "$member-" + string(room) + "-" + string(rune('0'+f.n))
	f.puts = append(f.puts, sentState{ID: id, Room: room, StateKey: key, Content: b})
	return id, nil
}

func (f *fakeTransport) SendEvent(_ context.Context, room callengine.RoomID, typ string, content any) (string, error) {
	b, _ := json.Marshal(content)
	var c struct {
		RelatesTo struct {
			EventID string `json:"event_id"`
		} `json:"m.relates_to"`
	}
	_ = json.Unmarshal(b, &c)
	f.mu.Lock()
	defer f.mu.Unlock()
	id := "$ring-" + string(room)
	f.events = append(f.events, sentEvent{ID: id, Room: room, Type: typ, RelatesTo: c.RelatesTo.EventID})
	return id, nil
}

// putsIn is every membership put in room, oldest first.
func (f *fakeTransport) putsIn(room callengine.RoomID) []sentState {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []sentState
	for _, p := range f.puts {
		if p.Room == room {
			out = append(out, p)
		}
	}
	return out
}

func (f *fakeTransport) sentEvents() []sentEvent {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.events)
}

// fakeSFU joins at once (or fails for rooms in fail), and keeps each
// room's callbacks so a test can play the SFU.
type fakeSFU struct {
	mu    sync.Mutex
	fail  map[callengine.RoomID]bool
	gate  chan struct{} // when set, Join waits for it, ignoring ctx
	conns map[callengine.RoomID][]*fakeConn
}

type fakeConn struct {
	mu       sync.Mutex
	keys     *CallKeys
	closed   bool
	presence func(string, bool)
	lost     func(error)
}

func (c *fakeConn) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.closed = true
	return nil
}

func (c *fakeConn) isClosed() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.closed
}

func (s *fakeSFU) Join(_ context.Context, room callengine.RoomID, keys *CallKeys, presence func(string, bool), lost func(error)) (io.Closer, error) {
	s.mu.Lock()
	gate := s.gate
	s.mu.Unlock()
	if gate != nil {
		<-gate
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.fail[room] {
		return nil, errors.New("no token for " + string(room))
	}
	if s.conns == nil {
		s.conns = map[callengine.RoomID][]*fakeConn{}
	}
	c := &fakeConn{presence: presence, lost: lost, keys: keys}
	s.conns[room] = append(s.conns[room], c)
	return c, nil
}

// Subscribe is Join for another member's SFU, kept under "room|url".
func (s *fakeSFU) Subscribe(ctx context.Context, room callengine.RoomID, serviceURL string, keys *CallKeys, presence func(string, bool), lost func(error)) (io.Closer, error) {
	return s.Join(ctx, callengine.RoomID(string(room)+"|"+serviceURL), keys, presence, lost)
}

// conn is room's latest connection; nil if none.
func (s *fakeSFU) conn(room callengine.RoomID) *fakeConn {
	s.mu.Lock()
	defer s.mu.Unlock()
	if cs := s.conns[room]; len(cs) > 0 {
		return cs[len(cs)-1]
	}
	return nil
}

// allClosed reports whether every connection ever made was closed.
func (s *fakeSFU) allClosed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, cs := range s.conns {
		for _, c := range cs {
			if !c.isClosed() {
				return false
			}
		}
	}
	return true
}

type rtcHarness struct {
	r    *Runner
	tr   *fakeTransport
	sfu  *fakeSFU
	stop context.CancelFunc
	done chan struct{}
}

// startRTC starts a runner for self with the household room roomH. Call
// it inside a synctest bubble.
func startRTC(t *testing.T, sfu *fakeSFU) *rtcHarness {
	t.Helper()
	h := &rtcHarness{tr: &fakeTransport{}, sfu: sfu, done: make(chan struct{})}
	h.r = NewRunner(RunnerConfig{
		Machine:   DefaultConfig(self, "https://rtc.example.org/livekit/jwt"),
		Household: func() []callengine.RoomID { return []callengine.RoomID{roomH} },
	}, h.tr, sfu)
	ctx, cancel := context.WithCancel(t.Context())
	h.stop = cancel
	go func() {
		defer close(h.done)
		if err := h.r.Run(ctx); err != nil {
			t.Error(err)
		}
	}()
	t.Cleanup(func() { cancel(); <-h.done })
	return h
}

func (h *rtcHarness) shutdown() {
	h.stop()
	<-h.done
}

var residents = []callengine.Resident{{User: alice.User, Room: roomA}, {User: bob.User, Room: roomB}}

// ring rings alice's and bob's rooms and the household room and checks
// that each got the intercom's membership, then a notification
// referencing it, and an SFU connection.
func (h *rtcHarness) ring(t *testing.T) {
	t.Helper()
	if err := h.r.Ring(t.Context(), residents); err != nil {
		t.Fatal(err)
	}
	synctest.Wait()
	events := h.tr.sentEvents()
	for _, room := range []callengine.RoomID{roomA, roomB, roomH} {
		puts := h.tr.putsIn(room)
		if len(puts) != 1 || puts[0].StateKey != StateKey(self) || puts[0].cleared() {
			t.Fatalf("room %s: memberships %+v, want one join", room, puts)
		}
		i := slices.IndexFunc(events, func(e sentEvent) bool { return e.Room == room })
		if i < 0 || events[i].Type != TypeNotification || events[i].RelatesTo == "" {
			t.Fatalf("room %s: notification %+v", room, events)
		}
		if h.sfu.conn(room) == nil {
			t.Fatalf("room %s: SFU not joined", room)
		}
	}
	st := h.r.Status()
	if st.Phase != callengine.PhaseRinging || len(st.Calls) != 3 {
		t.Fatalf("ring status %+v", st)
	}
	if ms := h.r.MachineStatus(); !ms.Rooms[0].SFU {
		t.Errorf("SFU connection not in the status: %+v", ms)
	}
}

// wantCleared checks that the last membership in each room is a leave and
// its SFU connection is closed.
func (h *rtcHarness) wantLeft(t *testing.T, rooms ...callengine.RoomID) {
	t.Helper()
	for _, room := range rooms {
		puts := h.tr.putsIn(room)
		if len(puts) == 0 || !puts[len(puts)-1].cleared() {
			t.Errorf("room %s: membership not cleared: %+v", room, puts)
		}
		if c := h.sfu.conn(room); c != nil && !c.isClosed() {
			t.Errorf("room %s: SFU connection left open", room)
		}
	}
}

func (h *rtcHarness) wantIdle(t *testing.T, reason string) {
	t.Helper()
	if st := h.r.Status(); st.Phase != callengine.PhaseIdle || len(st.Calls) != 0 {
		t.Fatalf("status %+v, want idle", st)
	}
	if ms := h.r.MachineStatus(); ms.LastEnd != reason {
		t.Fatalf("ended %q, want %q", ms.LastEnd, reason)
	}
}

func stateOf(room callengine.RoomID, e group.MemberEvent) callengine.StateEvent {
	return callengine.StateEvent{Room: room, ID: e.EventID, Type: e.Type, StateKey: e.StateKey, Sender: e.Sender,
		Content: e.Content, Timestamp: e.Timestamp}
}

// TestRunnerAnswer: a resident joins the call of their room and shows up
// at the SFU: the ring is a call there, the other rooms are left. The
// membership is refreshed while the call lasts; the resident gone from
// the SFU longer than the grace ends it.
func TestRunnerAnswer(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := startRTC(t, &fakeSFU{})
		h.ring(t)
		h.sfu.conn(roomA).presence(alice.Identity(), true)
		h.r.HandleState(stateOf(roomA, joinEvent(alice, time.Now())))
		synctest.Wait()
		st := h.r.Status()
		if st.Phase != callengine.PhaseInCall || len(st.Calls) != 1 || st.Calls[0].State != callengine.LegConnected ||
			st.Calls[0].Resident != alice.User || st.Calls[0].CallID != "matrixrtc:"+callengine.CallID(roomA) {
			t.Fatalf("status after the answer %+v", st)
		}
		if ms := h.r.MachineStatus(); ms.AnsweredBy != alice.Identity() {
			t.Errorf("answered by %q", ms.AnsweredBy)
		}
		h.wantLeft(t, roomB, roomH)
		if c := h.sfu.conn(roomA); c.isClosed() {
			t.Fatal("the answered room's SFU connection was closed")
		}
		// The intercom's own membership echoed by sync changes nothing
		// but the created_ts of the refresh, which follows the
		// homeserver's clock (10 minutes behind the board's here).
		echo := joinEvent(self, time.Now().Add(-10*time.Minute))
		echo.EventID = h.tr.putsIn(roomA)[0].ID
		h.r.HandleState(stateOf(roomA, echo))
		// Past the ring timeout and the first refresh: still in the call,
		// with a second membership carrying the first one's created_ts.
		time.Sleep(4*time.Minute + time.Second)
		synctest.Wait()
		puts := h.tr.putsIn(roomA)
		if len(puts) != 2 || puts[1].cleared() {
			t.Fatalf("room A memberships %+v, want the join and one refresh", puts)
		}
		var m Membership
		_ = json.Unmarshal(puts[1].Content, &m)
		if m.CreatedTS != echo.Timestamp.UnixMilli() {
			t.Errorf("refresh's created_ts is not the first membership's origin_server_ts %d: %s", echo.Timestamp.UnixMilli(), puts[1].Content)
		}
		if st := h.r.Status(); st.Phase != callengine.PhaseInCall {
			t.Fatalf("call ended by itself: %+v", st)
		}
		h.sfu.conn(roomA).presence(alice.Identity(), false)
		time.Sleep(21 * time.Second)
		synctest.Wait()
		h.wantIdle(t, ReasonResidentLeft)
		h.wantLeft(t, roomA)
	})
}

// TestRunnerDecline: the resident of a room declines the ring: that room
// is left, the others ring on; the ring timeout then leaves them all.
func TestRunnerDecline(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := startRTC(t, &fakeSFU{})
		h.ring(t)
		decline, _ := json.Marshal(map[string]any{"m.relates_to": map[string]string{"rel_type": "m.reference", "event_id": "$ring-" + string(roomA)}})
		h.r.HandleRoomEvent(callengine.RoomEvent{Room: roomA, Sender: alice.User, Type: TypeDecline, Content: decline})
		h.r.HandleRoomEvent(callengine.RoomEvent{Room: roomB, Sender: bob.User, Type: "m.room.message", Content: decline})
		synctest.Wait()
		h.wantLeft(t, roomA)
		if st := h.r.Status(); st.Phase != callengine.PhaseRinging || len(st.Calls) != 2 {
			t.Fatalf("after alice's decline %+v, want bob's and the household room ringing", st)
		}
		time.Sleep(61 * time.Second)
		synctest.Wait()
		h.wantIdle(t, ReasonNoAnswer)
		h.wantLeft(t, roomA, roomB, roomH)
	})
}

// TestRunnerAnsweredElsewhere: another path took the ring: every room is
// left.
func TestRunnerAnsweredElsewhere(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := startRTC(t, &fakeSFU{})
		updates, cancel := h.r.Subscribe()
		defer cancel()
		h.ring(t)
		h.r.Withdraw()
		synctest.Wait()
		h.wantIdle(t, ReasonAnsweredElsewhere)
		h.wantLeft(t, roomA, roomB, roomH)
		select {
		case st := <-updates:
			if st.Phase != callengine.PhaseIdle {
				t.Errorf("last update %+v", st)
			}
		default:
			t.Error("subscriber got no update")
		}
		// A hangup when idle changes nothing.
		h.r.Hangup()
		synctest.Wait()
		h.wantIdle(t, ReasonAnsweredElsewhere)
	})
}

// TestRunnerNoRingAfterWithdraw: a ring whose membership the homeserver
// still holds when another path takes the ring never leaves: it would
// reach the resident after the answer.
func TestRunnerNoRingAfterWithdraw(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := startRTC(t, &fakeSFU{})
		h.tr.hold, h.tr.holdFrom = make(chan struct{}), 1
		if err := h.r.Ring(t.Context(), residents); err != nil {
			t.Fatal(err)
		}
		synctest.Wait()
		h.r.Withdraw()
		synctest.Wait()
		close(h.tr.hold)
		synctest.Wait()
		if ev := h.tr.sentEvents(); len(ev) != 0 {
			t.Fatalf("rings sent after the withdraw: %+v", ev)
		}
		h.wantIdle(t, ReasonAnsweredElsewhere)
		h.wantLeft(t, roomA, roomB, roomH)
	})
}

// TestRunnerRoomsInParallel: one room's slow membership delays neither
// another room's membership nor its ring (issue 18: one queue for all
// rooms put the second room's ring 250–380 ms after the press); within a
// room the ring still follows its membership, and SFU joins do not wait.
// RingsOut stays open while a ring is on its way, RingsOutMax at most.
func TestRunnerRoomsInParallel(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		sfu := &fakeSFU{}
		h := startRTC(t, sfu)
		h.tr.hold, h.tr.holdFrom, h.tr.holdRoom = make(chan struct{}), 1, roomA
		closed := func() bool {
			select {
			case <-h.r.RingsOut():
				return true
			default:
				return false
			}
		}
		if !closed() {
			t.Fatal("RingsOut open before any ring")
		}
		if err := h.r.Ring(t.Context(), residents); err != nil {
			t.Fatal(err)
		}
		if closed() {
			t.Fatal("RingsOut closed as the ring was handed in")
		}
		synctest.Wait()
		if closed() {
			t.Fatal("RingsOut closed while room A's ring is held up")
		}
		events := h.tr.sentEvents()
		for _, room := range []callengine.RoomID{roomB, roomH} {
			puts := h.tr.putsIn(room)
			i := slices.IndexFunc(events, func(e sentEvent) bool { return e.Room == room })
			if len(puts) != 1 || i < 0 || events[i].RelatesTo != puts[0].ID {
				t.Fatalf("room %s waits for room A: memberships %+v, rings %+v", room, puts, events)
			}
		}
		for _, room := range []callengine.RoomID{roomA, roomB, roomH} {
			if sfu.conn(room) == nil {
				t.Errorf("room %s: SFU not joined at once", room)
			}
		}
		if len(h.tr.putsIn(roomA)) != 0 {
			t.Fatalf("room A: membership put while the homeserver holds it")
		}
		time.Sleep(RingsOutMax)
		synctest.Wait()
		if !closed() {
			t.Fatalf("RingsOut still open %v after the press", RingsOutMax)
		}
		close(h.tr.hold)
		synctest.Wait()
		if i := slices.IndexFunc(h.tr.sentEvents(), func(e sentEvent) bool { return e.Room == roomA }); i < 0 {
			t.Fatal("room A: no ring once its membership went through")
		}
		h.r.Hangup()
		synctest.Wait()
		h.wantLeft(t, roomA, roomB, roomH)
	})
}

// RingOut is per room: it is open from the moment Ring returns (before the
// loop has taken the ring: a classic invite for the room may be sent that
// soon) until that room's ring has left, while other rooms' close as
// theirs leave; a room MatrixRTC does not ring has nothing to wait for; a
// room whose ring never leaves is given up after RingsOutMax.
func TestRunnerRingOutPerRoom(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := startRTC(t, &fakeSFU{})
		h.tr.hold, h.tr.holdFrom, h.tr.holdRoom = make(chan struct{}), 1, roomA
		closed := func(c <-chan struct{}) bool {
			select {
			case <-c:
				return true
			default:
				return false
			}
		}
		if !closed(h.r.RingOut(roomA)) {
			t.Fatal("RingOut open before any ring")
		}
		if err := h.r.Ring(t.Context(), residents); err != nil {
			t.Fatal(err)
		}
		a, b := h.r.RingOut(roomA), h.r.RingOut(roomB)
		if closed(a) {
			t.Fatal("room A's RingOut closed as the ring was handed in")
		}
		// Room B's ring is not held: the loop, running beside this
		// goroutine, may have sent it already (CI once saw that). Its
		// RingOut may only be closed if it has.
		if closed(b) && !slices.ContainsFunc(h.tr.sentEvents(), func(e sentEvent) bool {
			return e.Room == roomB && e.Type == TypeNotification
		}) {
			t.Fatal("room B's RingOut closed before its ring left")
		}
		if !closed(h.r.RingOut("!classic-only:hs")) {
			t.Fatal("RingOut open for a room MatrixRTC does not ring")
		}
		synctest.Wait()
		if !closed(b) {
			t.Fatal("room B's RingOut open after its ring left")
		}
		if closed(a) {
			t.Fatal("room A's RingOut closed while its membership is held up")
		}
		time.Sleep(RingsOutMax)
		synctest.Wait()
		if !closed(a) {
			t.Fatalf("room A's RingOut still open %v after the press", RingsOutMax)
		}
		close(h.tr.hold)
		synctest.Wait()
		h.r.Hangup()
		synctest.Wait()
	})
}

// RingsOut closes as soon as every room's ring has left, without waiting
// for RingsOutMax.
func TestRunnerRingsOut(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := startRTC(t, &fakeSFU{})
		if err := h.r.Ring(t.Context(), residents); err != nil {
			t.Fatal(err)
		}
		out := h.r.RingsOut()
		synctest.Wait()
		select {
		case <-out:
		default:
			t.Fatal("RingsOut open after every ring left")
		}
		if n := len(h.tr.sentEvents()); n != 3 {
			t.Fatalf("%d rings, want 3", n)
		}
	})
}

// TestRunnerSFU: a room whose SFU cannot be joined, or whose connection
// is lost, is left: a resident would join a call without a picture.
func TestRunnerSFU(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := startRTC(t, &fakeSFU{fail: map[callengine.RoomID]bool{roomH: true}})
		if err := h.r.Ring(t.Context(), residents); err != nil {
			t.Fatal(err)
		}
		synctest.Wait()
		h.wantLeft(t, roomH)
		if st := h.r.Status(); len(st.Calls) != 2 {
			t.Fatalf("status %+v, want two rooms ringing", st)
		}
		h.sfu.conn(roomA).lost(nil)
		h.sfu.conn(roomB).lost(errors.New("SFU disconnected: server shutdown"))
		synctest.Wait()
		h.wantIdle(t, ReasonSFULost)
		h.wantLeft(t, roomA, roomB)
	})
}

// TestRunnerLateSFU: a connection that comes up after its room was left
// is closed at once.
func TestRunnerLateSFU(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		gate := make(chan struct{})
		h := startRTC(t, &fakeSFU{gate: gate})
		_ = h.r.Ring(t.Context(), residents[:1])
		synctest.Wait()
		h.r.Hangup()
		synctest.Wait()
		h.wantIdle(t, ReasonHangup)
		close(gate)
		synctest.Wait()
		if c := h.sfu.conn(roomA); c == nil || !c.isClosed() {
			t.Fatal("late SFU connection not closed")
		}
	})
}

// TestRunnerShutdown: stopping the runner mid-ring clears every
// membership with a context that outlives Run's, closes every SFU
// connection and leaves no goroutine behind (synctest.Test fails on one
// left blocked).
func TestRunnerShutdown(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := startRTC(t, &fakeSFU{})
		h.ring(t)
		h.shutdown()
		h.wantLeft(t, roomA, roomB, roomH)
		if !h.sfu.allClosed() {
			t.Error("an SFU connection was left open")
		}
		if st := h.r.Status(); st.Phase != callengine.PhaseIdle {
			t.Errorf("status after shutdown %+v", st)
		}
	})
}

// TestEncryptedRoomsRungClassicOnly: once sync shows a room's encryption,
// MatrixRTC leaves it to the classic call (this MatrixRTC media is not
// end-to-end encrypted); the other rooms and the household room still get
// their MatrixRTC ring. With every room encrypted there is nothing to
// ring.
func TestEncryptedRoomsRungClassicOnly(t *testing.T) {
	r := NewRunner(RunnerConfig{Household: func() []callengine.RoomID { return []callengine.RoomID{roomH} }}, nil, nil)
	enc, _ := json.Marshal(map[string]string{"algorithm": "m.megolm.v1.aes-sha2"})
	r.HandleState(callengine.StateEvent{Room: roomA, Type: TypeEncryption, Content: enc})
	r.HandleState(callengine.StateEvent{Room: roomA, Type: TypeEncryption, Content: enc})          // logged once
	r.HandleState(callengine.StateEvent{Room: roomB, Type: TypeEncryption, Content: []byte(`{}`)}) // redacted: not encrypted
	if err := r.Ring(context.Background(), residents); err != nil {
		t.Fatal(err)
	}
	var targets []Target
	for _, it := range r.inbox.Take() {
		if rr, ok := it.ev.(RingRequested); ok {
			targets = rr.Targets
		}
	}
	if len(targets) != 2 || targets[0].Room != roomB || targets[1].Room != roomH || !targets[1].Group || len(targets[1].Residents) != 2 {
		t.Fatalf("MatrixRTC targets %+v: want bob's room and the household room, not alice's encrypted one", targets)
	}

	r = NewRunner(RunnerConfig{}, nil, nil)
	r.HandleState(callengine.StateEvent{Room: roomA, Type: TypeEncryption, Content: enc})
	if err := r.Ring(context.Background(), residents[:1]); !errors.Is(err, ErrNoRooms) {
		t.Fatalf("ring with only an encrypted room: %v, want ErrNoRooms", err)
	}
}

// TestRingStatus: the machine's status as the ring coordinator sees it:
// each rung room a leg, connected and naming the resident once answered.
func TestRingStatus(t *testing.T) {
	st := ringStatus(Status{Phase: PhaseRinging, Since: t0, Rooms: []RoomStatus{{Room: "!a:x"}}})
	if st.Phase != callengine.PhaseRinging || len(st.Calls) != 1 || st.Calls[0].State != callengine.LegRinging {
		t.Fatalf("ringing: %+v", st)
	}
	st = ringStatus(Status{Phase: PhaseInCall, Since: t0, AnsweredBy: "@alice:x:PHONE",
		Rooms: []RoomStatus{{Room: "!a:x", Answered: true}}})
	if st.Phase != callengine.PhaseInCall || st.Calls[0].State != callengine.LegConnected || st.Calls[0].Resident != "@alice:x" {
		t.Fatalf("answered: %+v", st)
	}
	if st := ringStatus(Status{}); st.Phase != callengine.PhaseIdle {
		t.Fatalf("zero status: %+v", st)
	}
	if u := userOfIdentity("nocolon"); u != "nocolon" {
		t.Errorf("userOfIdentity(nocolon) = %q", u)
	}
}
