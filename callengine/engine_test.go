package callengine

import (
	"context"
	"encoding/json"
	"sync"
	"testing"
	"testing/synctest"
	"time"
)

// fakeTransport records sends; it is the in-memory stand-in for the Matrix
// adapter.
type fakeTransport struct {
	mu   sync.Mutex
	sent []sentEvent
}

type sentEvent struct {
	Room    RoomID
	Type    string
	Content map[string]any
}

func (f *fakeTransport) SendRoomEvent(_ context.Context, room RoomID, typ string, content any) error {
	raw, err := json.Marshal(content)
	if err != nil {
		return err
	}
	var m map[string]any
	if err := json.Unmarshal(raw, &m); err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.sent = append(f.sent, sentEvent{Room: room, Type: typ, Content: m})
	return nil
}

func (f *fakeTransport) of(typ string) []sentEvent {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []sentEvent
	for _, s := range f.sent {
		if s.Type == typ {
			out = append(out, s)
		}
	}
	return out
}

type fakePeer struct {
	mu      sync.Mutex
	answer  string
	cands   []Candidate
	closed  bool
	sink    func(PeerEvent)
	offerNo int
	ringing int // Ringing calls
}

func (p *fakePeer) Ringing() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.ringing++
}

func (p *fakePeer) Offer() string    { return testSDP }
func (p *fakePeer) StreamID() string { return "doorcam" }
func (p *fakePeer) SetAnswer(sdp string) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.answer = sdp
	return nil
}
func (p *fakePeer) AddCandidates(c []Candidate) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cands = append(p.cands, c...)
	return nil
}
func (p *fakePeer) AnswerOffer(string) (string, error) { return testSDP, nil }
func (p *fakePeer) RestartICE() (string, error)        { return testSDP, nil }
func (p *fakePeer) Close() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.closed = true
	return nil
}

type fakeFactory struct {
	mu    sync.Mutex
	peers []*fakePeer
}

func (f *fakeFactory) NewPeer(_ context.Context, sink func(PeerEvent)) (Peer, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	p := &fakePeer{sink: sink, offerNo: len(f.peers)}
	f.peers = append(f.peers, p)
	// A candidate gathered after the offer was read.
	go sink(PeerEvent{Candidate: &Candidate{Candidate: "candidate:9 1 udp 1 127.0.0.1 7000 typ host"}})
	return p, nil
}

func (f *fakeFactory) AcceptOffer(ctx context.Context, _ string, sink func(PeerEvent)) (Peer, string, error) {
	p, err := f.NewPeer(ctx, sink)
	return p, testSDP, err
}

func (f *fakeFactory) closedCount() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := 0
	for _, p := range f.peers {
		p.mu.Lock()
		if p.closed {
			n++
		}
		p.mu.Unlock()
	}
	return n
}

func roomEvent(room RoomID, sender UserID, typ string, content any) RoomEvent {
	raw, _ := json.Marshal(content)
	return RoomEvent{Room: room, Sender: sender, Type: typ, Content: raw}
}

func startEngine(t *testing.T, ctx context.Context) (*Engine, *fakeTransport, *fakeFactory, chan struct{}) {
	t.Helper()
	tr, pf := &fakeTransport{}, &fakeFactory{}
	e := NewEngine(EngineConfig{Machine: DefaultConfig(ourParty), OwnUser: "@intercom:test", PoolSize: 2}, tr, pf)
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := e.Run(ctx); err != nil {
			t.Error(err)
		}
	}()
	return e, tr, pf, done
}

var both = []Resident{{User: alice, Room: roomA}, {User: bob, Room: roomB}}

func TestEngineRingAnswerHangup(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx, cancel := context.WithCancel(t.Context())
		e, tr, pf, done := startEngine(t, ctx)
		synctest.Wait() // pool pre-warmed
		if err := e.Ring(ctx, both); err != nil {
			t.Fatal(err)
		}
		if err := e.Ring(ctx, both); err != ErrBusy {
			t.Fatalf("second ring: %v", err)
		}
		synctest.Wait()
		invites := tr.of(TypeInvite)
		if len(invites) != 2 {
			t.Fatalf("%d invites", len(invites))
		}
		callOf := map[RoomID]CallID{}
		for _, inv := range invites {
			callOf[inv.Room] = CallID(inv.Content["call_id"].(string))
		}
		time.Sleep(200 * time.Millisecond)
		if n := len(tr.of(TypeCandidates)); n != 2 {
			t.Fatalf("late candidates trickled in %d batches, want one per call", n)
		}
		// Own echo and garbage are dropped before the machine.
		e.HandleRoomEvent(roomEvent(roomA, "@intercom:test", TypeHangup, Hangup{Common: Common{CallID: callOf[roomA]}}))
		e.HandleRoomEvent(RoomEvent{Room: roomA, Sender: alice, Type: TypeAnswer, Content: []byte(`{"call_id":`)})
		synctest.Wait()
		if e.Status().Phase != PhaseRinging {
			t.Fatalf("status %+v", e.Status())
		}
		e.HandleRoomEvent(roomEvent(roomA, alice, TypeAnswer, answerFrom(callOf[roomA], aliceDev)))
		synctest.Wait()
		if s := tr.of(TypeSelectAnswer); len(s) != 1 || s[0].Content["selected_party_id"] != string(aliceDev) {
			t.Fatalf("select_answer %+v", s)
		}
		if h := tr.of(TypeHangup); len(h) != 1 || h[0].Room != roomB {
			t.Fatalf("hangups %+v", h)
		}
		if e.Status().Phase != PhaseInCall {
			t.Fatalf("status %+v", e.Status())
		}
		// Nothing connects within the bound: ice_timeout.
		time.Sleep(31 * time.Second)
		synctest.Wait()
		if e.Status().Phase != PhaseIdle {
			t.Fatalf("status %+v", e.Status())
		}
		cancel()
		<-done
		if pf.closedCount() != len(pf.peers) {
			t.Errorf("%d of %d peers closed", pf.closedCount(), len(pf.peers))
		}
	})
}

// A ring tells each peer it rings (media/webrtc warms the video encoder
// then); the peers still in the pool are not told.
func TestEngineRingWarmsPeers(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx, cancel := context.WithCancel(t.Context())
		e, _, pf, done := startEngine(t, ctx)
		synctest.Wait() // pool pre-warmed
		if err := e.Ring(ctx, both); err != nil {
			t.Fatal(err)
		}
		synctest.Wait() // the pool refilled
		pf.mu.Lock()
		rang := 0
		for _, p := range pf.peers {
			p.mu.Lock()
			switch {
			case p.ringing > 1:
				t.Errorf("peer %d told %d times", p.offerNo, p.ringing)
			case p.ringing == 1:
				rang++
			}
			p.mu.Unlock()
		}
		n := len(pf.peers)
		pf.mu.Unlock()
		if rang != len(both) || n != len(both)+2 {
			t.Errorf("%d of %d peers told they ring, want %d (and 2 in the pool)", rang, n, len(both))
		}
		cancel()
		<-done
	})
}

func TestEngineTimeoutAndShutdown(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx, cancel := context.WithCancel(t.Context())
		e, tr, _, done := startEngine(t, ctx)
		if err := e.Ring(ctx, both); err != nil {
			t.Fatal(err)
		}
		time.Sleep(61 * time.Second)
		synctest.Wait()
		hs := tr.of(TypeHangup)
		if len(hs) != 2 || hs[0].Content["reason"] != ReasonInviteTimeout {
			t.Fatalf("hangups %+v", hs)
		}
		// Ring again and stop the daemon mid-ring: the residents are told.
		if err := e.Ring(ctx, both); err != nil {
			t.Fatal(err)
		}
		synctest.Wait()
		cancel()
		<-done
		if hs := tr.of(TypeHangup); len(hs) != 4 || hs[3].Content["reason"] != ReasonUserHangup {
			t.Fatalf("hangups after shutdown %+v", hs)
		}
		if err := e.Ring(context.Background(), both); err != ErrStopped {
			t.Fatalf("ring after stop: %v", err)
		}
	})
}

func TestEngineRefreshPool(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx, cancel := context.WithCancel(t.Context())
		e, _, pf, done := startEngine(t, ctx)
		synctest.Wait()
		pf.mu.Lock()
		if len(pf.peers) != 2 {
			t.Fatalf("%d pooled peers, want 2", len(pf.peers))
		}
		pf.mu.Unlock()
		e.RefreshPool() // e.g. new TURN credentials
		synctest.Wait()
		pf.mu.Lock()
		n := len(pf.peers)
		pf.mu.Unlock()
		if n != 4 || pf.closedCount() != 2 {
			t.Fatalf("after refresh: %d peers made, %d closed; want 4 and 2", n, pf.closedCount())
		}
		cancel()
		<-done
	})
}

// An idle engine still goes round, so the watchdog can tell it from a
// stuck one.
func TestEngineHeartbeat(t *testing.T) {
	ctx, cancel := context.WithCancel(t.Context())
	e, _, _, done := startEngine(t, ctx)
	defer func() { cancel(); <-done }()
	start := time.Now()
	for deadline := start.Add(10 * time.Second); !e.Heartbeat().After(start.Add(500 * time.Millisecond)); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("no heartbeat after %v while idle (last %v)", time.Since(start), e.Heartbeat())
		}
	}
}
