package group

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"slices"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/doorbell/intercom/callengine"
)

// fakeTransport is the in-memory stand-in for the Matrix session: it
// records what the runner sends, in order, and serves the room's state.
type fakeTransport struct {
	mu        sync.Mutex
	state     []callengine.StateEvent // RoomStateEvents' answer
	stateErrs int                     // RoomStateEvents fails this many times first
	puts      []sentState
	events    []sentEvent
	toDevice  []sentToDevice
	n         int
}

type sentState struct {
	Room     callengine.RoomID
	Type     string
	StateKey string
	Content  MemberContent
}

type sentEvent struct {
	Room    callengine.RoomID
	Type    string
	Content map[string]any
}

type sentToDevice struct {
	Type    string
	To      Device
	Content json.RawMessage
}

func (f *fakeTransport) UserID() callengine.UserID { return fxIntercom }
func (f *fakeTransport) DeviceID() string          { return fxDevice }

func (f *fakeTransport) PutState(_ context.Context, room callengine.RoomID, typ, key string, content any) (string, error) {
	b, _ := json.Marshal(content)
	var c MemberContent
	_ = json.Unmarshal(b, &c)
	f.mu.Lock()
	defer f.mu.Unlock()
	f.n++
	f.puts = append(f.puts, sentState{Room: room, Type: typ, StateKey: key, Content: c})
	return "$state" + string(rune('0'+f.n)), nil
}

func (f *fakeTransport) SendEvent(_ context.Context, room callengine.RoomID, typ string, content any) (string, error) {
	b, _ := json.Marshal(content)
	var m map[string]any
	_ = json.Unmarshal(b, &m)
	f.mu.Lock()
	defer f.mu.Unlock()
	f.events = append(f.events, sentEvent{Room: room, Type: typ, Content: m})
	return "$event", nil
}

func (f *fakeTransport) SendToDevice(_ context.Context, typ string, user callengine.UserID, device string, content any) error {
	b, _ := json.Marshal(content)
	f.mu.Lock()
	defer f.mu.Unlock()
	f.toDevice = append(f.toDevice, sentToDevice{Type: typ, To: Device{User: user, DeviceID: device}, Content: b})
	return nil
}

func (f *fakeTransport) RoomStateEvents(_ context.Context, room callengine.RoomID, types ...string) ([]callengine.StateEvent, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.stateErrs > 0 {
		f.stateErrs--
		return nil, errors.New("homeserver unreachable")
	}
	if room != fxRoom || !slices.Contains(types, TypeMember) {
		return nil, errors.New("wrong room or types")
	}
	return f.state, nil
}

// lastPut is the last membership the runner published; ok is false if
// none.
func (f *fakeTransport) lastPut() (sentState, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.puts) == 0 {
		return sentState{}, false
	}
	return f.puts[len(f.puts)-1], true
}

func (f *fakeTransport) toDeviceOf(typ string) []sentToDevice {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []sentToDevice
	for _, s := range f.toDevice {
		if s.Type == typ {
			out = append(out, s)
		}
	}
	return out
}

type fakePeer struct {
	mu     sync.Mutex
	answer string
	cands  []callengine.Candidate
	closed bool
	sink   func(callengine.PeerEvent)
	// restarts counts RestartICE calls.
	restarts int
}

func (p *fakePeer) Offer() string    { return fxSDP }
func (p *fakePeer) StreamID() string { return "doorcam" }
func (p *fakePeer) SetAnswer(sdp string) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.answer = sdp
	return nil
}
func (p *fakePeer) AddCandidates(c []callengine.Candidate) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cands = append(p.cands, c...)
	return nil
}
func (p *fakePeer) AnswerOffer(string) (string, error) { return fxSDP, nil }
func (p *fakePeer) RestartICE() (string, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.restarts++
	return fxSDP, nil
}
func (p *fakePeer) Close() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.closed = true
	return nil
}

func (p *fakePeer) isClosed() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.closed
}

// connect reports the peer's media up, as pion would.
func (p *fakePeer) connect() { p.report(callengine.PeerConnected) }

// report reports a connection state, as pion would.
func (p *fakePeer) report(st callengine.PeerState) { p.sink(callengine.PeerEvent{State: &st}) }

func (p *fakePeer) restartCount() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.restarts
}

type fakeFactory struct {
	mu    sync.Mutex
	peers []*fakePeer
}

func (f *fakeFactory) NewPeer(_ context.Context, sink func(callengine.PeerEvent)) (callengine.Peer, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	p := &fakePeer{sink: sink}
	f.peers = append(f.peers, p)
	// A candidate gathered after the offer was read.
	go sink(callengine.PeerEvent{Candidate: &callengine.Candidate{Candidate: "candidate:9 1 udp 1 127.0.0.1 7000 typ host"}})
	return p, nil
}

func (f *fakeFactory) AcceptOffer(ctx context.Context, _ string, sink func(callengine.PeerEvent)) (callengine.Peer, string, error) {
	p, err := f.NewPeer(ctx, sink)
	return p, fxSDP, err
}

func (f *fakeFactory) all() []*fakePeer {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.peers)
}

// membershipOf is user's famedly membership for device, valid for 6 min.
func membershipOf(user callengine.UserID, device, session string) callengine.StateEvent {
	mb := NewOwnMembership(fxRoom, device, session, time.Now())
	mb.ExpiresTS = time.Now().Add(6 * time.Minute).UnixMilli()
	b, _ := json.Marshal(MemberContent{Memberships: []Membership{mb}})
	return callengine.StateEvent{Room: fxRoom, ID: "$m-" + device, Type: TypeMember, StateKey: string(user), Sender: user, Content: b, Timestamp: time.Now()}
}

type runnerHarness struct {
	r    *Runner
	tr   *fakeTransport
	pf   *fakeFactory
	stop context.CancelFunc
	done chan struct{}
	// joins counts JoinRoom calls.
	joins int
}

// startRunner starts a runner in the household room fxRoom whose first
// JoinRoom fails (the homeserver was not up yet). Call it inside a
// synctest bubble.
func startRunner(t *testing.T, state ...callengine.StateEvent) *runnerHarness {
	t.Helper()
	return startRunnerLogged(t, nil, state...)
}

// startRunnerLogged is startRunner with the runner's logger.
func startRunnerLogged(t *testing.T, log *slog.Logger, state ...callengine.StateEvent) *runnerHarness {
	t.Helper()
	h := &runnerHarness{tr: &fakeTransport{state: state, stateErrs: 1}, pf: &fakeFactory{}, done: make(chan struct{})}
	h.r = NewRunner(RunnerConfig{
		JoinRoom: func(context.Context) (callengine.RoomID, error) {
			h.joins++
			if h.joins == 1 {
				return "", errors.New("homeserver unreachable")
			}
			return fxRoom, nil
		},
		RingTimeout: 30 * time.Second,
		LiveView:    map[callengine.UserID]bool{fxTablet: true},
		SessionID:   fxSession,
		Logger:      log,
	}, h.tr, h.pf)
	ctx, cancel := context.WithCancel(t.Context())
	h.stop = cancel
	go func() {
		defer close(h.done)
		if err := h.r.Run(ctx); err != nil {
			t.Error(err)
		}
	}()
	time.Sleep(5 * time.Second) // both retries
	synctest.Wait()
	if h.joins != 2 || len(h.r.Rooms()) != 1 {
		t.Fatalf("after start: %d joins, rooms %v", h.joins, h.r.Rooms())
	}
	t.Cleanup(func() { cancel(); <-h.done })
	return h
}

// shutdown stops the runner and waits for Run to return.
func (h *runnerHarness) shutdown() {
	h.stop()
	<-h.done
}

func (h *runnerHarness) wantPhase(t *testing.T, want callengine.Phase) {
	t.Helper()
	if got := h.r.Status(); got.Phase != want {
		t.Fatalf("ring status %+v, want phase %s (household %+v)", got, want, h.r.MachineStatus())
	}
}

// wantLeft checks that the last membership published is a leave.
func (h *runnerHarness) wantLeft(t *testing.T) {
	t.Helper()
	p, ok := h.tr.lastPut()
	if !ok || len(p.Content.Memberships) != 0 || p.StateKey != string(fxIntercom) {
		t.Fatalf("last membership %+v (any: %v), want a leave", p, ok)
	}
}

// TestRunnerRingTimeout: a press publishes the membership, then rings
// the room with a notification relating to it; nobody connects within
// the ring timeout, so the intercom leaves.
func TestRunnerRingTimeout(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := startRunner(t)
		h.wantPhase(t, callengine.PhaseIdle)
		if err := h.r.Ring(t.Context(), nil); err != nil {
			t.Fatal(err)
		}
		synctest.Wait()
		p, ok := h.tr.lastPut()
		if !ok || p.Room != fxRoom || p.Type != TypeMember || len(p.Content.Memberships) != 1 || p.Content.Memberships[0].DeviceID != fxDevice {
			t.Fatalf("membership %+v", p)
		}
		h.tr.mu.Lock()
		ev := slices.Clone(h.tr.events)
		h.tr.mu.Unlock()
		if len(ev) != 1 || ev[0].Type != TypeRTCNotification || ev[0].Room != fxRoom {
			t.Fatalf("ring notification %+v", ev)
		}
		if rel, _ := ev[0].Content["m.relates_to"].(map[string]any); rel["event_id"] != "$state1" {
			t.Fatalf("notification relates to %v, want the membership $state1", ev[0].Content["m.relates_to"])
		}
		h.wantPhase(t, callengine.PhaseRinging)
		if st := h.r.Status(); st.Since.IsZero() {
			t.Errorf("ringing status without a since: %+v", st)
		}
		time.Sleep(31 * time.Second)
		synctest.Wait()
		h.wantLeft(t)
		h.wantPhase(t, callengine.PhaseIdle)
		if h.r.AnsweredSince(time.Now().Add(-time.Hour)) {
			t.Error("an unanswered ring counts as answered")
		}
	})
}

// TestRunnerAnswersDeviceInvite: a household device that sorts before
// the intercom calls it after the ring; the runner answers with a peer
// of its own, the media come up and the ring is a call. A hangup leaves.
func TestRunnerAnswersDeviceInvite(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := startRunner(t, membershipOf(fxTablet, fxTabletDev, fxTabletSes))
		if st := h.r.MachineStatus(); len(st.Members) != 1 || !st.Members[0].Valid {
			t.Fatalf("the room's state was not read: %+v", st)
		}
		_ = h.r.Ring(t.Context(), nil)
		synctest.Wait()
		start := time.Now()
		inv := toDevice(FamilyFamedly, "invite", fxTabletDev, fxTabletSes, fxSession, 0, invite("call-1"))
		h.r.HandleToDevice(inv.Sender, inv.Type, inv.Content)
		c := toDevice(FamilyFamedly, "candidates", fxTabletDev, fxTabletSes, fxSession, 1, cands("call-1", "candidate:1 1 udp 1 127.0.0.1 9 typ host"))
		h.r.HandleToDevice(c.Sender, c.Type, c.Content)
		synctest.Wait()
		ans := h.tr.toDeviceOf("com.famedly.call.member.answer")
		if len(ans) != 1 || ans[0].To != (Device{fxTablet, fxTabletDev}) {
			t.Fatalf("answers %+v", ans)
		}
		if n := len(h.tr.toDeviceOf("com.famedly.call.member.candidates")); n != 1 {
			t.Errorf("%d batches of local candidates sent, want 1", n)
		}
		peers := h.pf.all()
		if len(peers) != 1 {
			t.Fatalf("%d peers, want the one answering the invite", len(peers))
		}
		peers[0].mu.Lock()
		nc := len(peers[0].cands)
		peers[0].mu.Unlock()
		if nc != 1 {
			t.Errorf("%d remote candidates applied, want 1", nc)
		}
		h.wantPhase(t, callengine.PhaseRinging)
		if st := h.r.Status(); len(st.Calls) != 1 || st.Calls[0].State != callengine.LegAnswered || st.Calls[0].Direction != "inbound" {
			t.Fatalf("legs while connecting: %+v", st.Calls)
		}
		peers[0].connect()
		synctest.Wait()
		h.wantPhase(t, callengine.PhaseInCall)
		if st := h.r.Status(); st.Calls[0].State != callengine.LegConnected || st.Calls[0].Resident != fxTablet || st.Calls[0].Room != fxRoom {
			t.Fatalf("legs in call: %+v", st.Calls)
		}
		if !h.r.AnsweredSince(start) {
			t.Error("a device connected after the ring, but the ring counts as missed")
		}
		// Another path answering later changes nothing: the ring was
		// taken here.
		h.r.Withdraw()
		synctest.Wait()
		h.wantPhase(t, callengine.PhaseInCall)

		h.r.Hangup()
		synctest.Wait()
		h.wantLeft(t)
		h.wantPhase(t, callengine.PhaseIdle)
		if !peers[0].isClosed() {
			t.Error("peer of the ended call not closed")
		}
		if n := len(h.tr.toDeviceOf("com.famedly.call.member.hangup")); n != 1 {
			t.Errorf("%d hangups sent, want 1", n)
		}
		if !h.r.AnsweredSince(start) {
			t.Error("after the hangup, the answered ring counts as missed")
		}
	})
}

// TestRunnerCallsHigherDevice: a member that sorts after the intercom is
// called by it once the membership is out; its answer is applied and
// selected, then its media come up.
func TestRunnerCallsHigherDevice(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		zed := Device{User: "@zed:example.org", DeviceID: "PHONE"}
		h := startRunner(t)
		// The member arrives through the sync hook after start.
		h.r.HandleState(membershipOf(zed.User, zed.DeviceID, "zs"))
		_ = h.r.Ring(t.Context(), nil)
		synctest.Wait()
		invites := h.tr.toDeviceOf("com.famedly.call.member.invite")
		if len(invites) != 1 || invites[0].To != zed {
			t.Fatalf("invites %+v", invites)
		}
		td, err := DecodeToDevice(invites[0].Type, invites[0].Content)
		if err != nil {
			t.Fatal(err)
		}
		call, ok := td.Call.(*callengine.Invite)
		if !ok {
			t.Fatalf("invite content %T", td.Call)
		}
		ans := &callengine.Answer{Common: callengine.Common{CallID: call.CallID, PartyID: "PHONE", Version: "1"},
			Answer: callengine.SessionDescription{Type: "answer", SDP: fxSDP}}
		b, _ := EncodeToDevice(Envelope{RoomID: fxRoom, ConfID: string(fxRoom), SenderSessionID: "zs", DestSessionID: fxSession}, ans)
		h.r.HandleToDevice(zed.User, "m.call.answer", b)
		synctest.Wait()
		if s := h.tr.toDeviceOf("m.call.select_answer"); len(s) != 1 {
			t.Fatalf("select_answer %+v", s)
		}
		peers := h.pf.all()
		if len(peers) != 1 || peers[0].answer != fxSDP {
			t.Fatalf("answer not applied to the call's peer")
		}
		peers[0].connect()
		synctest.Wait()
		h.wantPhase(t, callengine.PhaseInCall)
		if st := h.r.Status(); st.Calls[0].Direction != "outbound" {
			t.Errorf("leg %+v, want outbound", st.Calls[0])
		}
		// The member leaves the room: its call ends and, nobody left,
		// the intercom leaves too.
		h.r.HandleState(callengine.StateEvent{Room: fxRoom, Type: "m.room.member", StateKey: string(zed.User), Sender: zed.User, Content: []byte(`{"membership":"leave"}`)})
		synctest.Wait()
		h.wantPhase(t, callengine.PhaseIdle)
		h.wantLeft(t)
		if !peers[0].isClosed() {
			t.Error("peer not closed")
		}
	})
}

// TestRunnerWithdraw: another path took the ring while the household
// was rung and nobody here connected: the intercom leaves.
func TestRunnerWithdraw(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := startRunner(t)
		updates, cancel := h.r.Subscribe()
		defer cancel()
		_ = h.r.Ring(t.Context(), nil)
		synctest.Wait()
		h.wantPhase(t, callengine.PhaseRinging)
		h.r.Withdraw()
		synctest.Wait()
		h.wantLeft(t)
		h.wantPhase(t, callengine.PhaseIdle)
		select {
		case st := <-updates:
			if st.Phase != callengine.PhaseIdle {
				t.Errorf("last update %+v, want idle", st)
			}
		default:
			t.Error("subscriber got no update")
		}
	})
}

// TestRunnerShutdown: a runner stopped mid-call leaves the call on its
// way out (with a context that outlives Run's), closes every peer and
// leaves no goroutine behind (synctest.Test fails on one that is left
// blocked).
func TestRunnerShutdown(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := startRunner(t, membershipOf(fxTablet, fxTabletDev, fxTabletSes))
		_ = h.r.Ring(t.Context(), nil)
		synctest.Wait()
		inv := toDevice(FamilyFamedly, "invite", fxTabletDev, fxTabletSes, fxSession, 0, invite("call-1"))
		h.r.HandleToDevice(inv.Sender, inv.Type, inv.Content)
		synctest.Wait()
		h.pf.all()[0].connect()
		synctest.Wait()
		h.wantPhase(t, callengine.PhaseInCall)
		h.shutdown()
		h.wantLeft(t)
		for i, p := range h.pf.all() {
			if !p.isClosed() {
				t.Errorf("peer %d left open", i)
			}
		}
	})
}

// TestRunnerStopsWhileJoining: a runner stopped before it could join the
// room returns without sending anything.
func TestRunnerStopsWhileJoining(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		tr := &fakeTransport{}
		r := NewRunner(RunnerConfig{JoinRoom: func(context.Context) (callengine.RoomID, error) {
			return "", errors.New("homeserver unreachable")
		}}, tr, &fakeFactory{})
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan error)
		go func() { done <- r.Run(ctx) }()
		time.Sleep(time.Minute)
		cancel()
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		if _, ok := tr.lastPut(); ok || r.Rooms() != nil {
			t.Fatalf("runner that never joined sent a membership or has rooms %v", r.Rooms())
		}
	})
}

// TestRingStatus: a live view is no ring (a press may ring over it); an
// open ring rings even with watchers connected; a device that connected
// after the ring is a call.
func TestRingStatus(t *testing.T) {
	watching := []CallStatus{{CallID: "w", User: "@alice:x", Outbound: false, State: "connected"}}
	for _, c := range []struct {
		name string
		st   Status
		want callengine.Phase
	}{
		{"not joined", Status{}, callengine.PhaseIdle},
		{"live view", Status{Phase: PhaseInCall, LiveView: true, Calls: watching}, callengine.PhaseIdle},
		{"rung over a live view", Status{Phase: PhaseInCall, Rung: true, Calls: watching}, callengine.PhaseRinging},
		{"rung", Status{Phase: PhaseRinging, Rung: true}, callengine.PhaseRinging},
		{"answered", Status{Phase: PhaseInCall, Calls: watching}, callengine.PhaseInCall},
	} {
		st := ringStatus(c.st, time.Time{})
		if st.Phase != c.want || len(st.Calls) != len(c.st.Calls) {
			t.Errorf("%s: %+v, want phase %s", c.name, st, c.want)
		}
	}
	for state, want := range map[string]callengine.LegState{"connected": callengine.LegConnected, "held": callengine.LegConnected,
		"connecting": callengine.LegAnswered, "answering": callengine.LegAnswering, "accepting": callengine.LegAnswering,
		"inviting": callengine.LegRinging, "creating": callengine.LegRinging} {
		st := ringStatus(Status{Phase: PhaseRinging, Calls: []CallStatus{{CallID: "c", State: state, Outbound: true}}}, time.Time{})
		if st.Calls[0].State != want || st.Calls[0].Direction != "outbound" {
			t.Errorf("leg %s: %+v, want %s", state, st.Calls[0], want)
		}
	}
}

// TestRunnerRestartsICE: the runner carries out the machine's ICE restart
// of a call it placed: the peer's restart offer leaves as a negotiate to
// the device, the device's answer reaches the peer, and the call goes on.
// A second loss with no answer ends the call with ice_failed after the
// restart timeout.
func TestRunnerRestartsICE(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		zed := Device{User: "@zed:example.org", DeviceID: "PHONE"}
		h := startRunner(t, membershipOf(zed.User, zed.DeviceID, "zs"))
		_ = h.r.Ring(t.Context(), nil)
		synctest.Wait()
		invites := h.tr.toDeviceOf("com.famedly.call.member.invite")
		if len(invites) != 1 {
			t.Fatalf("invites %+v", invites)
		}
		td, _ := DecodeToDevice(invites[0].Type, invites[0].Content)
		id := td.CallID()
		zedSends := func(name string, call any) {
			b, _ := EncodeToDevice(Envelope{RoomID: fxRoom, ConfID: string(fxRoom), DeviceID: zed.DeviceID, SenderSessionID: "zs", DestSessionID: fxSession}, call)
			h.r.HandleToDevice(zed.User, ToDeviceType(FamilyFamedly, "m.call."+name), b)
			synctest.Wait()
		}
		zedSends("answer", &callengine.Answer{Common: callengine.Common{CallID: id, PartyID: "PHONE", Version: "1"},
			Answer: callengine.SessionDescription{Type: "answer", SDP: fxSDP}})
		p := h.pf.all()[0]
		p.connect()
		synctest.Wait()
		h.wantPhase(t, callengine.PhaseInCall)

		p.report(callengine.PeerDisconnected)
		synctest.Wait()
		time.Sleep(DefaultDisconnectedGrace)
		synctest.Wait()
		negs := h.tr.toDeviceOf("com.famedly.call.member.negotiate")
		if p.restartCount() != 1 || len(negs) != 1 || negs[0].To != zed {
			t.Fatalf("after %v disconnected: %d restarts, negotiates %+v", DefaultDisconnectedGrace, p.restartCount(), negs)
		}
		if c := h.r.MachineStatus().Calls; len(c) != 1 || !c[0].Recovering {
			t.Fatalf("calls while recovering %+v", c)
		}
		const restartAnswer = "v=0\r\na=ice-ufrag:zed2\r\n"
		zedSends("negotiate", &callengine.Negotiate{Common: callengine.Common{CallID: id, PartyID: "PHONE", Version: "1"},
			Lifetime: 10000, Description: callengine.SessionDescription{Type: "answer", SDP: restartAnswer}})
		p.mu.Lock()
		got := p.answer
		p.mu.Unlock()
		if got != restartAnswer {
			t.Fatalf("peer's answer %q, want the restart's", got)
		}
		p.connect()
		synctest.Wait()
		if c := h.r.MachineStatus().Calls; len(c) != 1 || c[0].Recovering || c[0].State != string(legConnected) {
			t.Fatalf("calls after recovery %+v", c)
		}

		// Lost for good: restarts every RestartRetry, then ice_failed.
		p.report(callengine.PeerFailed)
		synctest.Wait()
		time.Sleep(DefaultRestartTimeout)
		synctest.Wait()
		hangups := h.tr.toDeviceOf("com.famedly.call.member.hangup")
		if len(hangups) != 1 {
			t.Fatalf("hangups %+v", hangups)
		}
		td, _ = DecodeToDevice(hangups[0].Type, hangups[0].Content)
		if r := td.Call.(*callengine.Hangup).Reason; r != callengine.ReasonICEFailed || !p.isClosed() {
			t.Fatalf("hangup reason %q, peer closed %v", r, p.isClosed())
		}
		// The first loss took one restart; the second one at once, a
		// new one at 6 s and 12 s (each unanswered for two rounds of 3 s),
		// and none past the 15 s bound.
		if n := p.restartCount(); n != 4 {
			t.Errorf("%d restarts, want 4", n)
		}
	})
}
