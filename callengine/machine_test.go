package callengine

import (
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"
)

const (
	alice     UserID  = "@alice:test"
	bob       UserID  = "@bob:test"
	mallory   UserID  = "@mallory:test"
	roomA     RoomID  = "!a:test"
	roomB     RoomID  = "!b:test"
	callA     CallID  = "1000aaaa"
	callB     CallID  = "1000bbbb"
	ourParty  PartyID = "INTERCOM"
	aliceDev  PartyID = "ALICEPHONE"
	aliceDev2 PartyID = "ALICELAPTOP"
	bobDev    PartyID = "BOBPHONE"
)

const testSDP = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\na=candidate:1 1 udp 2130706431 127.0.0.1 5000 typ host\r\n"

// harness drives a Machine with a fake clock and records effects.
type harness struct {
	t   *testing.T
	m   *Machine
	now time.Time
}

func newHarness(t *testing.T) *harness {
	t.Helper()
	cfg := DefaultConfig(ourParty)
	return &harness{t: t, m: NewMachine(cfg), now: time.Unix(1_700_000_000, 0)}
}

func (h *harness) step(ev Event) []Effect {
	h.t.Helper()
	return h.m.Step(h.now, ev)
}

func (h *harness) advance(d time.Duration) { h.now = h.now.Add(d) }

func (h *harness) ringBoth() []Effect {
	h.t.Helper()
	return h.step(RingRequested{Legs: []LegSpec{
		{CallID: callA, Room: roomA, Invitee: alice, OfferSDP: testSDP, StreamID: "doorcam"},
		{CallID: callB, Room: roomB, Invitee: bob, OfferSDP: testSDP, StreamID: "doorcam"},
	}})
}

func from(room RoomID, sender UserID, content any) SignalReceived {
	return SignalReceived{Room: room, Sender: sender, Content: content}
}

func answerFrom(id CallID, party PartyID) *Answer {
	return &Answer{Common: Common{CallID: id, PartyID: party, Version: "1"}, Answer: SessionDescription{Type: "answer", SDP: testSDP}}
}

// answerAndApply delivers an answer and reports it applied successfully.
func (h *harness) answerAndApply(room RoomID, sender UserID, id CallID, party PartyID) []Effect {
	h.t.Helper()
	effs := h.step(from(room, sender, answerFrom(id, party)))
	if !slices.ContainsFunc(effs, func(e Effect) bool { a, ok := e.(ApplyAnswer); return ok && a.CallID == id }) {
		h.t.Fatalf("answer on %s did not apply: %#v", id, effs)
	}
	return append(effs, h.step(AnswerApplied{CallID: id})...)
}

func sends(effs []Effect) []Send {
	var out []Send
	for _, e := range effs {
		if s, ok := e.(Send); ok {
			out = append(out, s)
		}
	}
	return out
}

func sendOf(t *testing.T, effs []Effect, id CallID, typ string) Send {
	t.Helper()
	for _, s := range sends(effs) {
		if s.CallID == id && s.Type == typ {
			return s
		}
	}
	t.Fatalf("no %s for %s in %#v", typ, id, effs)
	return Send{}
}

func hasSend(effs []Effect, id CallID, typ string) bool {
	return slices.ContainsFunc(sends(effs), func(s Send) bool { return s.CallID == id && s.Type == typ })
}

func ignoredReason(effs []Effect) string {
	for _, e := range effs {
		if ig, ok := e.(Ignored); ok {
			return ig.Reason
		}
	}
	return ""
}

func TestRingSendsSpecInvites(t *testing.T) {
	h := newHarness(t)
	effs := h.ringBoth()
	if got := h.m.Phase(); got != PhaseRinging {
		t.Fatalf("phase = %s, want ringing", got)
	}
	inv := sendOf(t, effs, callA, TypeInvite)
	if inv.Room != roomA {
		t.Errorf("invite room = %s", inv.Room)
	}
	raw, err := json.Marshal(inv.Content)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(raw, &m); err != nil {
		t.Fatal(err)
	}
	// matrix-voip.md §1.2: version is the string "1"; lifetime present;
	// both metadata keys keyed by the stream ID.
	checks := map[string]any{"call_id": string(callA), "party_id": string(ourParty), "version": "1", "lifetime": float64(60000), "invitee": string(alice)}
	for k, want := range checks {
		if m[k] != want {
			t.Errorf("invite %s = %#v, want %#v", k, m[k], want)
		}
	}
	for _, key := range []string{"sdp_stream_metadata", "org.matrix.msc3077.sdp_stream_metadata"} {
		md, _ := m[key].(map[string]any)
		if s, _ := md["doorcam"].(map[string]any); s["purpose"] != "m.usermedia" {
			t.Errorf("%s = %#v", key, m[key])
		}
	}
	if offer, _ := m["offer"].(map[string]any); offer["type"] != "offer" || offer["sdp"] != testSDP {
		t.Errorf("offer = %#v", m["offer"])
	}
	if !hasSend(effs, callB, TypeInvite) {
		t.Error("bob was not invited")
	}
	if !slices.Contains(effs, Effect(StartTimer{Timer: TimerID{Kind: TimerRing}, After: 60 * time.Second})) {
		t.Errorf("no ring timer: %#v", effs)
	}
}

func TestFirstAnswerWins(t *testing.T) {
	h := newHarness(t)
	h.ringBoth()
	h.advance(2 * time.Second)
	effs := h.answerAndApply(roomA, alice, callA, aliceDev)
	sel := sendOf(t, effs, callA, TypeSelectAnswer).Content.(*SelectAnswer)
	if sel.SelectedPartyID != aliceDev {
		t.Errorf("selected %s, want %s", sel.SelectedPartyID, aliceDev)
	}
	hang := sendOf(t, effs, callB, TypeHangup).Content.(*Hangup)
	if hang.Reason != ReasonUserHangup {
		t.Errorf("bob's hangup reason %q", hang.Reason)
	}
	if !slices.Contains(effs, Effect(ClosePeer{CallID: callB})) {
		t.Error("bob's peer not closed")
	}
	if hasSend(effs, callA, TypeHangup) {
		t.Error("winner was hung up")
	}
	if h.m.Phase() != PhaseInCall {
		t.Fatalf("phase %s", h.m.Phase())
	}
	// Bob answers a moment later: ignored, nothing sent.
	late := h.step(from(roomB, bob, answerFrom(callB, bobDev)))
	if len(sends(late)) != 0 || ignoredReason(late) == "" {
		t.Errorf("late answer produced %#v", late)
	}
	// A second device of alice answering too is ignored.
	late = h.step(from(roomA, alice, answerFrom(callA, aliceDev2)))
	if len(sends(late)) != 0 {
		t.Errorf("second answer produced %#v", late)
	}
	// Connected, then alice hangs up: back to idle, peer closed.
	h.step(PeerChanged{CallID: callA, State: PeerConnected})
	if st := h.m.Status(); st.Calls[0].State != LegConnected {
		t.Fatalf("status %+v", st)
	}
	effs = h.step(from(roomA, alice, &Hangup{Common: Common{CallID: callA, PartyID: aliceDev}}))
	if h.m.Phase() != PhaseIdle || !slices.Contains(effs, Effect(ClosePeer{CallID: callA})) {
		t.Fatalf("after hangup: phase %s effects %#v", h.m.Phase(), effs)
	}
	if hasSend(effs, callA, TypeHangup) {
		t.Error("echoed a hangup back to the resident")
	}
}

func TestAnswersWhileApplyingQueue(t *testing.T) {
	h := newHarness(t)
	h.ringBoth()
	h.step(from(roomA, alice, answerFrom(callA, aliceDev)))
	// Bob answers before alice's answer is applied; alice's turns out to
	// be unusable: bob gets the call, alice is not hung up on.
	if effs := h.step(from(roomB, bob, answerFrom(callB, bobDev))); len(effs) != 0 {
		t.Fatalf("bob's answer should wait, got %#v", effs)
	}
	effs := h.step(AnswerApplied{CallID: callA, Err: errors.New("bad sdp")})
	if len(sends(effs)) != 0 || ignoredReason(effs) == "" {
		t.Errorf("refused answer: %#v", effs)
	}
	if !slices.Contains(effs, Effect(ApplyAnswer{CallID: callB, SDP: testSDP})) {
		t.Fatalf("bob's queued answer not applied: %#v", effs)
	}
	effs = h.step(AnswerApplied{CallID: callB})
	sendOf(t, effs, callB, TypeSelectAnswer)
	if h.m.Phase() != PhaseInCall {
		t.Fatalf("phase %s", h.m.Phase())
	}
}

func TestRefusedAnswerKeepsRinging(t *testing.T) {
	h := newHarness(t)
	h.ringBoth()
	h.step(from(roomA, alice, answerFrom(callA, aliceDev2)))
	effs := h.step(AnswerApplied{CallID: callA, Err: errors.New("no common codec")})
	if len(sends(effs)) != 0 {
		t.Fatalf("refused answer sent %#v", effs)
	}
	if st := h.m.Status(); st.Phase != PhaseRinging || st.Calls[0].State != LegRinging {
		t.Fatalf("status %+v", st)
	}
	// Alice's phone then answers properly and wins.
	effs = h.answerAndApply(roomA, alice, callA, aliceDev)
	if sel := sendOf(t, effs, callA, TypeSelectAnswer).Content.(*SelectAnswer); sel.SelectedPartyID != aliceDev {
		t.Fatalf("selected %s", sel.SelectedPartyID)
	}
}

func TestMediaClosedWaitsForHangup(t *testing.T) {
	h := newHarness(t)
	h.ringBoth()
	h.answerAndApply(roomA, alice, callA, aliceDev)
	h.step(PeerChanged{CallID: callA, State: PeerConnected})
	effs := h.step(PeerChanged{CallID: callA, State: PeerClosed})
	if len(sends(effs)) != 0 || h.m.Phase() != PhaseInCall {
		t.Fatalf("closed media ended the call at once: %#v", effs)
	}
	effs = h.step(from(roomA, alice, &Hangup{Common: Common{CallID: callA, PartyID: aliceDev}, Reason: ReasonUserHangup}))
	if hasSend(effs, callA, TypeHangup) || h.m.Phase() != PhaseIdle {
		t.Fatalf("effects %#v phase %s", effs, h.m.Phase())
	}
	if !slices.Contains(effs, Effect(StopTimer{Timer: TimerID{Kind: TimerClosed, CallID: callA}})) {
		t.Error("grace timer left running")
	}
	if r := h.m.Status().Calls[0].Reason; r != ReasonUserHangup {
		t.Errorf("reason %q", r)
	}

	// Without a hangup, the grace ends the call.
	h = newHarness(t)
	h.ringBoth()
	h.answerAndApply(roomA, alice, callA, aliceDev)
	h.step(PeerChanged{CallID: callA, State: PeerConnected})
	h.step(PeerChanged{CallID: callA, State: PeerClosed})
	effs = h.step(TimerFired{Timer: TimerID{Kind: TimerClosed, CallID: callA}})
	if !hasSend(effs, callA, TypeHangup) || h.m.Phase() != PhaseIdle {
		t.Fatalf("effects %#v", effs)
	}
}

func TestRejectAndTimeout(t *testing.T) {
	h := newHarness(t)
	h.ringBoth()
	effs := h.step(from(roomB, bob, &Reject{Common: Common{CallID: callB, PartyID: bobDev}}))
	if hasSend(effs, callB, TypeHangup) {
		t.Error("hangup sent for a rejected call")
	}
	if h.m.Phase() != PhaseRinging {
		t.Fatalf("alice should still ring, phase %s", h.m.Phase())
	}
	h.advance(60 * time.Second)
	effs = h.step(TimerFired{Timer: TimerID{Kind: TimerRing}})
	if hang := sendOf(t, effs, callA, TypeHangup).Content.(*Hangup); hang.Reason != ReasonInviteTimeout {
		t.Errorf("timeout reason %q", hang.Reason)
	}
	if hasSend(effs, callB, TypeHangup) {
		t.Error("rejected call hung up again at timeout")
	}
	if h.m.Phase() != PhaseIdle {
		t.Fatalf("phase %s", h.m.Phase())
	}
	st := h.m.Status()
	if st.Calls[0].Reason != ReasonInviteTimeout || st.Calls[1].Reason != "rejected" {
		t.Errorf("status reasons %+v", st.Calls)
	}
}

func TestAllRejectGoesIdle(t *testing.T) {
	h := newHarness(t)
	h.ringBoth()
	h.step(from(roomA, alice, &Reject{Common: Common{CallID: callA, PartyID: aliceDev}}))
	effs := h.step(from(roomB, bob, &Hangup{Common: Common{CallID: callB, PartyID: bobDev}, Reason: "userHangup"}))
	if h.m.Phase() != PhaseIdle {
		t.Fatalf("phase %s", h.m.Phase())
	}
	if !slices.Contains(effs, Effect(StopTimer{Timer: TimerID{Kind: TimerRing}})) {
		t.Error("ring timer left running")
	}
}

func TestForeignAndStaleEventsIgnored(t *testing.T) {
	cases := []struct {
		name string
		ev   SignalReceived
	}{
		{"unknown call", from(roomA, alice, answerFrom("999", aliceDev))},
		{"wrong sender", from(roomA, mallory, answerFrom(callA, "M"))},
		{"wrong room", from(roomB, alice, answerFrom(callA, aliceDev))},
		{"select_answer on outbound", from(roomA, alice, &SelectAnswer{Common: Common{CallID: callA}, SelectedPartyID: "x"})},
		{"negotiate", from(roomA, alice, &Negotiate{Common: Common{CallID: callA}})},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t)
			h.ringBoth()
			effs := h.step(tc.ev)
			if ignoredReason(effs) == "" || len(sends(effs)) != 0 {
				t.Fatalf("effects %#v", effs)
			}
			if h.m.Phase() != PhaseRinging {
				t.Fatalf("phase %s", h.m.Phase())
			}
		})
	}
	// After the ring is over, a hangup for its call changes nothing.
	h := newHarness(t)
	h.ringBoth()
	h.step(HangupRequested{})
	if effs := h.step(from(roomA, alice, &Hangup{Common: Common{CallID: callA}})); len(sends(effs)) != 0 {
		t.Errorf("effects %#v", effs)
	}
}

func TestRemoteCandidatesFollowSelectedParty(t *testing.T) {
	h := newHarness(t)
	h.ringBoth()
	c := func(s string) []Candidate { return []Candidate{{Candidate: s}} }
	h.step(from(roomA, alice, &Candidates{Common: Common{CallID: callA, PartyID: aliceDev2}, Candidates: c("candidate:laptop")}))
	h.step(from(roomA, alice, &Candidates{Common: Common{CallID: callA, PartyID: aliceDev}, Candidates: c("candidate:phone")}))
	effs := h.answerAndApply(roomA, alice, callA, aliceDev)
	if !slices.ContainsFunc(effs, func(e Effect) bool {
		a, ok := e.(ApplyCandidates)
		return ok && len(a.Candidates) == 1 && a.Candidates[0].Candidate == "candidate:phone"
	}) {
		t.Fatalf("buffered candidates of the selected party not applied: %#v", effs)
	}
	effs = h.step(from(roomA, alice, &Candidates{Common: Common{CallID: callA, PartyID: aliceDev2}, Candidates: c("candidate:laptop2")}))
	if ignoredReason(effs) == "" {
		t.Errorf("unselected party's candidates applied: %#v", effs)
	}
	effs = h.step(from(roomA, alice, &Candidates{Common: Common{CallID: callA, PartyID: aliceDev}, Candidates: c("")}))
	if len(effs) != 1 {
		t.Errorf("end of candidates from the selected party: %#v", effs)
	}
	// Unselected party hanging up does not end the call.
	h.step(from(roomA, alice, &Hangup{Common: Common{CallID: callA, PartyID: aliceDev2}}))
	if h.m.Phase() != PhaseInCall {
		t.Fatalf("phase %s", h.m.Phase())
	}
}

func TestLocalCandidatesBatched(t *testing.T) {
	h := newHarness(t)
	h.ringBoth()
	// Already in the offer: not sent again.
	if effs := h.step(LocalCandidate{CallID: callA, Candidate: Candidate{Candidate: "candidate:1 1 udp 2130706431 127.0.0.1 5000 typ host"}}); len(effs) != 0 {
		t.Fatalf("offer candidate re-sent: %#v", effs)
	}
	effs := h.step(LocalCandidate{CallID: callA, Candidate: Candidate{Candidate: "candidate:2 1 udp 1 10.0.0.1 6000 typ relay"}})
	if len(effs) != 1 {
		t.Fatalf("want flush timer, got %#v", effs)
	}
	if effs := h.step(LocalCandidate{CallID: callA, Candidate: Candidate{}}); len(effs) != 0 {
		t.Fatalf("second candidate re-armed the timer: %#v", effs)
	}
	effs = h.step(TimerFired{Timer: TimerID{Kind: TimerFlush, CallID: callA}})
	c := sendOf(t, effs, callA, TypeCandidates).Content.(*Candidates)
	if len(c.Candidates) != 2 || !c.Candidates[1].IsEnd() {
		t.Fatalf("batch %+v", c.Candidates)
	}
	raw, _ := json.Marshal(c.Candidates[1])
	if string(raw) != `{"candidate":""}` {
		t.Errorf("end marker = %s, want no sdpMid/sdpMLineIndex", raw)
	}
}

func TestConnectionFailures(t *testing.T) {
	t.Run("connect timeout", func(t *testing.T) {
		h := newHarness(t)
		h.ringBoth()
		h.answerAndApply(roomA, alice, callA, aliceDev)
		effs := h.step(TimerFired{Timer: TimerID{Kind: TimerConnect, CallID: callA}})
		if sendOf(t, effs, callA, TypeHangup).Content.(*Hangup).Reason != ReasonICETimeout || h.m.Phase() != PhaseIdle {
			t.Fatalf("effects %#v", effs)
		}
	})
	t.Run("ice failed, restart does not recover", func(t *testing.T) {
		h := newHarness(t)
		h.ringBoth()
		h.answerAndApply(roomA, alice, callA, aliceDev)
		h.step(PeerChanged{CallID: callA, State: PeerConnected})
		effs := h.step(PeerChanged{CallID: callA, State: PeerFailed})
		if !slices.Contains(effs, Effect(RestartICE{CallID: callA})) || h.m.Phase() != PhaseInCall {
			t.Fatalf("no ICE restart: %#v", effs)
		}
		effs = h.step(OfferCreated{CallID: callA, SDP: testSDP})
		neg := sendOf(t, effs, callA, TypeNegotiate).Content.(*Negotiate)
		if neg.Description.Type != "offer" || neg.Lifetime <= 0 {
			t.Fatalf("negotiate %+v", neg)
		}
		// A second failure while the restart is out does not restart again.
		if effs := h.step(PeerChanged{CallID: callA, State: PeerFailed}); len(effs) != 0 {
			t.Fatalf("second restart: %#v", effs)
		}
		effs = h.step(TimerFired{Timer: TimerID{Kind: TimerRestart, CallID: callA}})
		if sendOf(t, effs, callA, TypeHangup).Content.(*Hangup).Reason != ReasonICEFailed || h.m.Phase() != PhaseIdle {
			t.Fatalf("effects %#v", effs)
		}
	})
	t.Run("disconnected, restart recovers", func(t *testing.T) {
		h := newHarness(t)
		h.ringBoth()
		h.answerAndApply(roomA, alice, callA, aliceDev)
		h.step(PeerChanged{CallID: callA, State: PeerConnected})
		effs := h.step(PeerChanged{CallID: callA, State: PeerDisconnected})
		if !slices.Contains(effs, Effect(StartTimer{Timer: TimerID{Kind: TimerDisconnected, CallID: callA}, After: 2 * time.Second})) {
			t.Fatalf("effects %#v", effs)
		}
		effs = h.step(TimerFired{Timer: TimerID{Kind: TimerDisconnected, CallID: callA}})
		if !slices.Contains(effs, Effect(RestartICE{CallID: callA})) {
			t.Fatalf("effects %#v", effs)
		}
		h.step(OfferCreated{CallID: callA, SDP: testSDP})
		ans := &Negotiate{Common: Common{CallID: callA, PartyID: aliceDev}, Lifetime: 10000, Description: SessionDescription{Type: "answer", SDP: testSDP}}
		effs = h.step(from(roomA, alice, ans))
		if !slices.Contains(effs, Effect(ApplyRenegotiatedAnswer{CallID: callA, SDP: testSDP})) {
			t.Fatalf("restart answer not applied: %#v", effs)
		}
		effs = h.step(PeerChanged{CallID: callA, State: PeerConnected})
		if !slices.Contains(effs, Effect(StopTimer{Timer: TimerID{Kind: TimerRestart, CallID: callA}})) || h.m.Phase() != PhaseInCall {
			t.Fatalf("effects %#v", effs)
		}
	})
	t.Run("invite not delivered", func(t *testing.T) {
		h := newHarness(t)
		h.ringBoth()
		h.step(SendFailed{CallID: callA, Type: TypeInvite, Err: errors.New("down")})
		h.step(SendFailed{CallID: callB, Type: TypeInvite, Err: errors.New("down")})
		if h.m.Phase() != PhaseIdle {
			t.Fatalf("phase %s", h.m.Phase())
		}
	})
}

func TestInboundInviteRejected(t *testing.T) {
	h := newHarness(t)
	inv := &Invite{Common: Common{CallID: "2000x", PartyID: aliceDev, Version: "1"}, Lifetime: 60000, Offer: SessionDescription{Type: "offer", SDP: testSDP}}
	effs := h.step(from(roomA, alice, inv))
	if s := sendOf(t, effs, "2000x", TypeReject); s.Room != roomA {
		t.Errorf("reject to %s", s.Room)
	}
	stale := h.step(SignalReceived{Room: roomA, Sender: alice, Age: 2 * time.Minute, Content: inv})
	if len(sends(stale)) != 0 {
		t.Errorf("expired invite answered: %#v", stale)
	}
	if h.m.Phase() != PhaseIdle {
		t.Fatal("inbound invite changed the phase")
	}
}

func TestBusyRingIgnored(t *testing.T) {
	h := newHarness(t)
	h.ringBoth()
	effs := h.step(RingRequested{Legs: []LegSpec{{CallID: "3", Room: roomA, Invitee: alice, OfferSDP: testSDP}}})
	if len(sends(effs)) != 0 || !slices.Contains(effs, Effect(ClosePeer{CallID: "3"})) {
		t.Fatalf("effects %#v", effs)
	}
}

// FuzzMachine feeds random event sequences and checks the invariants the
// rest of the intercom relies on.
func FuzzMachine(f *testing.F) {
	f.Add([]byte{0, 1, 2, 3, 4, 5, 6, 7, 8, 9})
	f.Add([]byte{0, 2, 9, 2, 3, 1, 11, 4, 4, 4})
	f.Fuzz(func(t *testing.T, ops []byte) {
		h := liveViewHarness(t)
		calls := []CallID{callA, callB, "other"}
		users := []UserID{alice, bob, mallory}
		rooms := []RoomID{roomA, roomB}
		parties := []PartyID{aliceDev, bobDev, aliceDev2, ourParty}
		selects := map[CallID]int{}
		for i, op := range ops {
			pick := func(n int) int { return int(ops[(i+1)%len(ops)]) % n }
			id, u, r, p := calls[pick(3)], users[pick(3)], rooms[pick(2)], parties[pick(4)]
			var ev Event
			switch op % 16 {
			case 0:
				ev = RingRequested{Legs: []LegSpec{{CallID: callA, Room: roomA, Invitee: alice, OfferSDP: testSDP}, {CallID: callB, Room: roomB, Invitee: bob, OfferSDP: testSDP}}}
			case 1:
				ev = from(r, u, answerFrom(id, p))
			case 2:
				ev = AnswerApplied{CallID: id}
			case 3:
				ev = AnswerApplied{CallID: id, Err: errors.New("x")}
			case 4:
				ev = from(r, u, &Hangup{Common: Common{CallID: id, PartyID: p}})
			case 5:
				ev = from(r, u, &Reject{Common: Common{CallID: id, PartyID: p}})
			case 6:
				ev = from(r, u, &Candidates{Common: Common{CallID: id, PartyID: p}, Candidates: []Candidate{{Candidate: "candidate:x"}}})
			case 7:
				ev = PeerChanged{CallID: id, State: PeerState(pick(6))}
			case 8:
				ev = TimerFired{Timer: TimerID{Kind: TimerKind(1 + pick(4)), CallID: id}}
			case 9:
				ev = LocalCandidate{CallID: id, Candidate: Candidate{Candidate: fmt.Sprint("candidate:", i)}}
			case 10:
				ev = SendFailed{CallID: id, Type: []string{TypeInvite, TypeSelectAnswer, TypeHangup}[pick(3)]}
			case 11:
				ev = HangupRequested{}
			case 12:
				ev = from(r, u, &Invite{Common: Common{CallID: id, PartyID: p}, Offer: SessionDescription{Type: "offer", SDP: testSDP}})
			case 13:
				ev = CallAccepted{CallID: id, AnswerSDP: testSDP}
			case 14:
				ev = from(r, u, &Negotiate{Common: Common{CallID: id, PartyID: p}, Description: SessionDescription{Type: []string{"offer", "answer"}[pick(2)], SDP: testSDP}})
			case 15:
				ev = OfferCreated{CallID: id, SDP: testSDP}
			}
			if _, ok := ev.(RingRequested); ok {
				clear(selects)
			}
			effs := h.step(ev)
			for _, s := range sends(effs) {
				if s.Type == TypeSelectAnswer && s.Content.(*SelectAnswer).SelectedPartyID != ourParty {
					if _, isReject := ev.(SignalReceived); !isReject || !strings.Contains(fmt.Sprintf("%T", ev.(SignalReceived).Content), "Reject") {
						selects[s.CallID]++
					}
				}
				if s.Type == TypeInvite {
					continue
				}
				if s.Type != TypeReject && s.Room != roomA && s.Room != roomB {
					t.Fatalf("send to unknown room %s", s.Room)
				}
			}
			total := 0
			for _, n := range selects {
				total += n
			}
			if total > 1 {
				t.Fatalf("more than one answer selected in one ring: %v", selects)
			}
			live := 0
			for _, c := range h.m.Status().Calls {
				if c.State == LegAnswered || c.State == LegConnected {
					live++
				}
			}
			if live > 1 {
				t.Fatalf("%d calls in progress at once", live)
			}
			if h.m.Phase() == PhaseIdle && live != 0 {
				t.Fatal("idle with a call in progress")
			}
		}
	})
}

func inviteFrom(id CallID, party PartyID) *Invite {
	return &Invite{Common: Common{CallID: id, PartyID: party, Version: "1"}, Lifetime: 60000, Offer: SessionDescription{Type: "offer", SDP: testSDP}}
}

func liveViewHarness(t *testing.T) *harness {
	h := newHarness(t)
	h.m.cfg.LiveView = map[UserID]bool{alice: true, bob: true}
	return h
}

func TestLiveViewAutoAnswer(t *testing.T) {
	h := liveViewHarness(t)
	effs := h.step(from(roomA, alice, inviteFrom("2000lv", aliceDev)))
	if !slices.Contains(effs, Effect(AcceptCall{CallID: "2000lv", OfferSDP: testSDP})) || h.m.Phase() != PhaseInCall {
		t.Fatalf("effects %#v phase %s", effs, h.m.Phase())
	}
	// Trickled while our peer is being made: kept for it.
	h.step(from(roomA, alice, &Candidates{Common: Common{CallID: "2000lv", PartyID: aliceDev}, Candidates: []Candidate{{Candidate: "candidate:early"}}}))
	effs = h.step(CallAccepted{CallID: "2000lv", AnswerSDP: testSDP, StreamID: "doorcam"})
	ans := sendOf(t, effs, "2000lv", TypeAnswer).Content.(*Answer)
	if ans.Answer.Type != "answer" || ans.Metadata["doorcam"].Purpose != StreamPurposeUserMedia || ans.MetadataUnstable["doorcam"].Purpose != StreamPurposeUserMedia || ans.Version != "1" {
		t.Fatalf("answer %+v", ans)
	}
	if !slices.ContainsFunc(effs, func(e Effect) bool {
		a, ok := e.(ApplyCandidates)
		return ok && a.Candidates[0].Candidate == "candidate:early"
	}) {
		t.Errorf("early candidates not applied: %#v", effs)
	}
	// The caller selects us: nothing to do. A renegotiation offer (hold)
	// is answered.
	if effs := h.step(from(roomA, alice, &SelectAnswer{Common: Common{CallID: "2000lv", PartyID: aliceDev}, SelectedPartyID: ourParty})); len(effs) != 0 {
		t.Fatalf("select_answer: %#v", effs)
	}
	h.step(PeerChanged{CallID: "2000lv", State: PeerConnected})
	effs = h.step(from(roomA, alice, &Negotiate{Common: Common{CallID: "2000lv", PartyID: aliceDev}, Lifetime: 10000, Description: SessionDescription{Type: "offer", SDP: testSDP}}))
	if !slices.Contains(effs, Effect(AnswerOffer{CallID: "2000lv", SDP: testSDP})) {
		t.Fatalf("negotiate offer: %#v", effs)
	}
	effs = h.step(NegotiationAnswered{CallID: "2000lv", SDP: testSDP})
	if neg := sendOf(t, effs, "2000lv", TypeNegotiate).Content.(*Negotiate); neg.Description.Type != "answer" || neg.Metadata["doorcam"].Purpose != StreamPurposeUserMedia || neg.MetadataUnstable["doorcam"].Purpose != StreamPurposeUserMedia {
		t.Fatalf("negotiate %+v", neg)
	}
	// Busy: bob's call is turned away at once.
	effs = h.step(from(roomB, bob, inviteFrom("2001bob", bobDev)))
	if !hasSend(effs, "2001bob", TypeReject) {
		t.Fatalf("busy: %#v", effs)
	}
	// And a press while watching is refused by the engine (phase in_call).
	effs = h.step(from(roomA, alice, &Hangup{Common: Common{CallID: "2000lv", PartyID: aliceDev}}))
	if h.m.Phase() != PhaseIdle || hasSend(effs, "2000lv", TypeHangup) {
		t.Fatalf("hangup: %#v", effs)
	}
	if st := h.m.Status(); st.Calls[0].Direction != "inbound" {
		t.Errorf("status %+v", st)
	}
}

func TestLiveViewRefused(t *testing.T) {
	h := liveViewHarness(t)
	effs := h.step(from(roomA, mallory, inviteFrom("2000m", "M")))
	if !hasSend(effs, "2000m", TypeReject) || h.m.Phase() != PhaseIdle {
		t.Fatalf("stranger: %#v", effs)
	}
	effs = h.step(from(roomA, alice, inviteFrom("2000x", aliceDev)))
	effs = append(effs, h.step(CallAccepted{CallID: "2000x", Err: errors.New("no camera")})...)
	if sendOf(t, effs, "2000x", TypeHangup).Content.(*Hangup).Reason != ReasonMediaFailed || h.m.Phase() != PhaseIdle {
		t.Fatalf("failed accept: %#v", effs)
	}
	// Answered elsewhere (another intercom device): bow out silently.
	h.step(from(roomA, alice, inviteFrom("2000y", aliceDev)))
	h.step(CallAccepted{CallID: "2000y", AnswerSDP: testSDP})
	effs = h.step(from(roomA, alice, &SelectAnswer{Common: Common{CallID: "2000y", PartyID: aliceDev}, SelectedPartyID: "OTHERDOOR"}))
	if len(sends(effs)) != 0 || h.m.Phase() != PhaseIdle {
		t.Fatalf("answered elsewhere: %#v", effs)
	}
}

func TestGlare(t *testing.T) {
	t.Run("resident's call is older: it survives", func(t *testing.T) {
		h := liveViewHarness(t)
		h.ringBoth() // our calls are 1000aaaa, 1000bbbb
		effs := h.step(from(roomA, alice, inviteFrom("0999alice", aliceDev)))
		if sendOf(t, effs, callA, TypeHangup).Content.(*Hangup).Reason != "replaced" {
			t.Fatalf("our call not replaced: %#v", effs)
		}
		if !hasSend(effs, callB, TypeHangup) {
			t.Error("bob still rings")
		}
		if !slices.Contains(effs, Effect(AcceptCall{CallID: "0999alice", OfferSDP: testSDP})) || h.m.Phase() != PhaseInCall {
			t.Fatalf("alice's call not accepted: %#v", effs)
		}
	})
	t.Run("our call is older: it survives", func(t *testing.T) {
		h := liveViewHarness(t)
		h.ringBoth()
		effs := h.step(from(roomA, alice, inviteFrom("2000alice", aliceDev)))
		if !hasSend(effs, "2000alice", TypeReject) || h.m.Phase() != PhaseRinging {
			t.Fatalf("effects %#v", effs)
		}
		if hasSend(effs, callA, TypeHangup) || hasSend(effs, callB, TypeHangup) {
			t.Fatal("our ring was hung up")
		}
		h.answerAndApply(roomA, alice, callA, aliceDev)
		if h.m.Phase() != PhaseInCall {
			t.Fatal("ring not answerable after glare")
		}
	})
}

func TestImpoliteCallerDropsCollidingOffer(t *testing.T) {
	h := newHarness(t)
	h.ringBoth()
	h.answerAndApply(roomA, alice, callA, aliceDev)
	h.step(PeerChanged{CallID: callA, State: PeerConnected})
	h.step(PeerChanged{CallID: callA, State: PeerFailed})
	effs := h.step(from(roomA, alice, &Negotiate{Common: Common{CallID: callA, PartyID: aliceDev}, Description: SessionDescription{Type: "offer", SDP: testSDP}}))
	if ignoredReason(effs) == "" || slices.ContainsFunc(effs, func(e Effect) bool { _, ok := e.(AnswerOffer); return ok }) {
		t.Fatalf("colliding offer taken: %#v", effs)
	}
	stale := h.step(SignalReceived{Room: roomA, Sender: alice, Age: time.Minute, Content: &Negotiate{Common: Common{CallID: callA, PartyID: aliceDev}, Lifetime: 10000, Description: SessionDescription{Type: "answer", SDP: testSDP}}})
	if ignoredReason(stale) != "negotiate expired" {
		t.Fatalf("stale negotiate: %#v", stale)
	}
}

// TestRingWithdrawn: another path took the ring. Every call still ringing
// is hung up; a call answered here (two answers at once) is kept.
func TestRingWithdrawn(t *testing.T) {
	h := newHarness(t)
	h.ringBoth()
	h.advance(time.Second)
	effs := h.step(RingWithdrawn{})
	for _, id := range []CallID{callA, callB} {
		if hang := sendOf(t, effs, id, TypeHangup).Content.(*Hangup); hang.Reason != ReasonUserHangup {
			t.Errorf("%s hung up with %q", id, hang.Reason)
		}
		if !slices.Contains(effs, Effect(ClosePeer{CallID: id})) {
			t.Errorf("%s peer not closed", id)
		}
	}
	if h.m.Phase() != PhaseIdle {
		t.Fatalf("phase %s after withdraw", h.m.Phase())
	}

	h = newHarness(t)
	h.ringBoth()
	h.answerAndApply(roomA, alice, callA, aliceDev)
	if effs := h.step(RingWithdrawn{}); len(effs) != 0 || h.m.Phase() != PhaseInCall {
		t.Fatalf("withdraw in a call: phase %s effects %#v", h.m.Phase(), effs)
	}
	// Idle: nothing to withdraw.
	if effs := newHarness(t).step(RingWithdrawn{}); len(effs) != 0 {
		t.Fatalf("withdraw when idle: %#v", effs)
	}
}
