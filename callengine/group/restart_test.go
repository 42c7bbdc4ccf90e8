package group

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/doorbell/intercom/callengine"
)

// The intercom's ICE restart of a mesh call it placed (issue 15: a
// network blip during a connected call resumes the media). The tests
// drive the pure machine with a fake clock (harness.advance and the
// TimerFired the runner would deliver) and fake signalling.

var fxZed = Device{User: "@zed:example.org", DeviceID: "PHONE"}

const fxZedSes = "zs"

// outboundCall rings, has the intercom call zed ("@zed" sorts after
// "@intercom") and connects the call; it returns the call's ID.
func outboundCall(t *testing.T, h *harness) callengine.CallID {
	t.Helper()
	h.member(fxZed.User, fxZed.DeviceID, fxZedSes, 6*time.Minute)
	effs := h.join()
	offer := find[CreateOffer](effs)
	if offer == nil {
		t.Fatalf("no call placed to zed: %v", effs)
	}
	id := offer.CallID
	h.step(OfferCreated{CallID: id, SDP: fxSDP, StreamID: "doorcam"})
	ans := &callengine.Answer{Common: callengine.Common{CallID: id, PartyID: callengine.PartyID(fxZed.DeviceID), Version: "1"},
		Answer: callengine.SessionDescription{Type: "answer", SDP: fxSDP}}
	h.step(zedEvent(t, "answer", ans))
	h.step(AnswerApplied{CallID: id})
	h.step(PeerChanged{CallID: id, State: callengine.PeerConnected})
	if h.m.Phase() != PhaseInCall {
		t.Fatalf("phase %s after connect", h.m.Phase())
	}
	return id
}

// zedEvent is a famedly to-device call event from zed's device to the
// intercom's session, without seq (delivered at once).
func zedEvent(t *testing.T, name string, call any) ToDeviceReceived {
	t.Helper()
	b, err := EncodeToDevice(Envelope{RoomID: fxRoom, ConfID: string(fxRoom), DeviceID: fxZed.DeviceID,
		SenderSessionID: fxZedSes, DestSessionID: fxSession}, call)
	if err != nil {
		t.Fatal(err)
	}
	return ToDeviceReceived{Sender: fxZed.User, Type: ToDeviceType(FamilyFamedly, "m.call."+name), Content: b}
}

func negotiate(id callengine.CallID, party, typ string) *callengine.Negotiate {
	return &callengine.Negotiate{Common: callengine.Common{CallID: id, PartyID: callengine.PartyID(party), Version: "1"},
		Lifetime: 10000, Description: callengine.SessionDescription{Type: typ, SDP: fxSDP}}
}

// timerStarted reports the StartTimer of kind for call id in effs.
func timerStarted(effs []Effect, kind TimerKind, id callengine.CallID) (time.Duration, bool) {
	for _, s := range all[StartTimer](effs) {
		if s.ID == (TimerID{Kind: kind, Key: string(id)}) {
			return s.After, true
		}
	}
	return 0, false
}

func timerStopped(effs []Effect, kind TimerKind, id callengine.CallID) bool {
	for _, s := range all[StopTimer](effs) {
		if s.ID == (TimerID{Kind: kind, Key: string(id)}) {
			return true
		}
	}
	return false
}

func hangupOf(t *testing.T, effs []Effect) *callengine.Hangup {
	t.Helper()
	for _, s := range all[SendToDevice](effs) {
		if s.Type == "com.famedly.call.member.hangup" {
			td, err := DecodeToDevice(s.Type, s.Content)
			if err != nil {
				t.Fatal(err)
			}
			return td.Call.(*callengine.Hangup)
		}
	}
	return nil
}

// TestICERestartAfterDisconnect: the call's media disconnects; after
// DisconnectedGrace (2 s) the intercom, which placed the call, sends an
// m.call.negotiate offer with new ICE credentials over to-device, with
// the mesh envelope (conf_id, device_id, seq, sender_session_id,
// dest_session_id) and the stream metadata; the device's answer is
// applied and the media comes back, without a new call.
func TestICERestartAfterDisconnect(t *testing.T) {
	h := newHarness(t)
	id := outboundCall(t, h)

	effs := h.step(PeerChanged{CallID: id, State: callengine.PeerDisconnected})
	if after, ok := timerStarted(effs, TimerDisconnected, id); !ok || after != DefaultDisconnectedGrace {
		t.Fatalf("disconnected: %v, want the %v grace timer", effs, DefaultDisconnectedGrace)
	}
	if find[RestartICE](effs) != nil {
		t.Fatal("restarted ICE at once on a disconnect, which may be transient")
	}
	h.advance(DefaultDisconnectedGrace)
	effs = h.step(TimerFired{ID: TimerID{Kind: TimerDisconnected, Key: string(id)}})
	if r := find[RestartICE](effs); r == nil || r.CallID != id {
		t.Fatalf("after the grace: %v, want RestartICE", effs)
	}
	if after, ok := timerStarted(effs, TimerRestart, id); !ok || after != DefaultRestartTimeout {
		t.Errorf("no %v restart bound: %v", DefaultRestartTimeout, effs)
	}
	if after, ok := timerStarted(effs, TimerRetry, id); !ok || after != DefaultRestartRetry {
		t.Errorf("no %v retry: %v", DefaultRestartRetry, effs)
	}
	if st := h.m.Status(h.now); len(st.Calls) != 1 || st.Calls[0].State != string(legConnected) || !st.Calls[0].Recovering || st.Phase != PhaseInCall {
		t.Errorf("status while recovering %+v", st)
	}

	effs = h.step(RestartOffered{CallID: id, SDP: fxSDP + "a=ice-ufrag:r1\r\n"})
	send := find[SendToDevice](effs)
	if send == nil || send.Type != "com.famedly.call.member.negotiate" || send.To != fxZed || send.CallID != id {
		t.Fatalf("restart offer: %v", effs)
	}
	raw := send.Content
	wantKeys(t, "negotiate offer", raw, "room_id", "conf_id", "device_id", "sender_session_id", "dest_session_id", "seq",
		"call_id", "party_id", "version", "lifetime", "description", "sdp_stream_metadata", "org.matrix.msc3077.sdp_stream_metadata")
	td, err := DecodeToDevice(send.Type, raw)
	if err != nil {
		t.Fatal(err)
	}
	n := td.Call.(*callengine.Negotiate)
	// seq 0 was the invite, 1 the select_answer.
	if td.ConfID != string(fxRoom) || td.DeviceID != fxDevice || td.SenderSessionID != fxSession || td.DestSessionID != fxZedSes ||
		td.Seq == nil || *td.Seq != 2 || n.Description.Type != "offer" || n.Description.SDP != fxSDP+"a=ice-ufrag:r1\r\n" ||
		n.PartyID != fxDevice || n.MetadataUnstable["doorcam"].Purpose != callengine.StreamPurposeUserMedia {
		t.Errorf("negotiate offer %+v %+v", td, n)
	}

	effs = h.step(zedEvent(t, "negotiate", negotiate(id, fxZed.DeviceID, "answer")))
	if a := find[ApplyRestartAnswer](effs); a == nil || a.CallID != id || a.SDP != fxSDP {
		t.Fatalf("restart answer: %v", effs)
	}
	h.step(RestartAnswerApplied{CallID: id})
	h.advance(300 * time.Millisecond)
	effs = h.step(PeerChanged{CallID: id, State: callengine.PeerConnected})
	for _, k := range []TimerKind{TimerRestart, TimerRetry, TimerDisconnected} {
		if !timerStopped(effs, k, id) {
			t.Errorf("timer %d not stopped on recovery: %v", k, effs)
		}
	}
	if find[SendToDevice](effs) != nil || find[ClosePeer](effs) != nil {
		t.Errorf("recovery sent or closed something: %v", effs)
	}
	if st := h.m.Status(h.now); len(st.Calls) != 1 || st.Calls[0].CallID != id || st.Calls[0].Recovering || st.Phase != PhaseInCall {
		t.Errorf("status after recovery %+v", st)
	}
	// A second answer has no offer to answer.
	effs = h.step(zedEvent(t, "negotiate", negotiate(id, fxZed.DeviceID, "answer")))
	if find[ApplyRestartAnswer](effs) != nil || find[Ignored](effs) == nil {
		t.Errorf("stray answer: %v", effs)
	}
}

// TestShortDisconnectNoRestart: media that comes back within the grace
// needs no restart.
func TestShortDisconnectNoRestart(t *testing.T) {
	h := newHarness(t)
	id := outboundCall(t, h)
	h.step(PeerChanged{CallID: id, State: callengine.PeerDisconnected})
	h.advance(time.Second)
	effs := h.step(PeerChanged{CallID: id, State: callengine.PeerConnected})
	if !timerStopped(effs, TimerDisconnected, id) || find[RestartICE](effs) != nil {
		t.Fatalf("back within the grace: %v", effs)
	}
	if st := h.m.Status(h.now); st.Calls[0].Recovering {
		t.Errorf("still recovering: %+v", st.Calls[0])
	}
}

// TestICERestartOnFailedAndRetry: a failed connection restarts at once;
// a restart that does not connect (made while the link was down, it
// gathered nothing) is made again every RestartRetry; an offer whose
// answer has not come yet is not doubled for one round, and replaced
// after two or when it could not be sent.
func TestICERestartOnFailedAndRetry(t *testing.T) {
	h := newHarness(t)
	id := outboundCall(t, h)
	effs := h.step(PeerChanged{CallID: id, State: callengine.PeerFailed})
	if find[RestartICE](effs) == nil || hangupOf(t, effs) != nil {
		t.Fatalf("failed: %v, want an ICE restart", effs)
	}
	h.step(RestartOffered{CallID: id, SDP: "offer-1"})
	// No answer yet when the retry comes: wait another round.
	h.advance(DefaultRestartRetry)
	effs = h.step(TimerFired{ID: TimerID{Kind: TimerRetry, Key: string(id)}})
	if find[RestartICE](effs) != nil {
		t.Fatalf("second offer while the first is unanswered: %v", effs)
	}
	if _, ok := timerStarted(effs, TimerRetry, id); !ok {
		t.Fatalf("retry not planned again: %v", effs)
	}
	h.step(zedEvent(t, "negotiate", negotiate(id, fxZed.DeviceID, "answer")))
	h.step(RestartAnswerApplied{CallID: id})
	// Answered, still not connected: restart again.
	h.advance(DefaultRestartRetry)
	effs = h.step(TimerFired{ID: TimerID{Kind: TimerRetry, Key: string(id)}})
	if find[RestartICE](effs) == nil {
		t.Fatalf("retry: %v, want a second restart", effs)
	}
	effs = h.step(RestartOffered{CallID: id, SDP: "offer-2"})
	if s := find[SendToDevice](effs); s == nil || s.Type != "com.famedly.call.member.negotiate" {
		t.Fatalf("second restart offer not sent: %v", effs)
	}
	// A peer that could not make the offer: the next retry tries again.
	h.step(zedEvent(t, "negotiate", negotiate(id, fxZed.DeviceID, "answer")))
	h.advance(DefaultRestartRetry)
	h.step(TimerFired{ID: TimerID{Kind: TimerRetry, Key: string(id)}})
	effs = h.step(RestartOffered{CallID: id, Err: errNoPeer})
	if find[SendToDevice](effs) != nil || find[Ignored](effs) == nil {
		t.Fatalf("failed offer: %v", effs)
	}
	h.advance(DefaultRestartRetry)
	if effs = h.step(TimerFired{ID: TimerID{Kind: TimerRetry, Key: string(id)}}); find[RestartICE](effs) == nil {
		t.Fatalf("no restart after a failed offer: %v", effs)
	}
	// An offer the homeserver refused (it is unreachable too): the next
	// retry makes another.
	effs = h.step(RestartOffered{CallID: id, SDP: fxSDP})
	neg := find[SendToDevice](effs)
	h.step(SendFailed{CallID: id, Type: neg.Type})
	h.advance(DefaultRestartRetry)
	if effs = h.step(TimerFired{ID: TimerID{Kind: TimerRetry, Key: string(id)}}); find[RestartICE](effs) == nil {
		t.Fatalf("no restart after the offer was not sent: %v", effs)
	}
	// An offer sent but never answered (the answer lost on the way): a
	// new one after two rounds.
	h.step(RestartOffered{CallID: id, SDP: fxSDP})
	h.advance(DefaultRestartRetry)
	if effs = h.step(TimerFired{ID: TimerID{Kind: TimerRetry, Key: string(id)}}); find[RestartICE](effs) != nil {
		t.Fatalf("new offer after one unanswered round: %v", effs)
	}
	h.advance(DefaultRestartRetry)
	if effs = h.step(TimerFired{ID: TimerID{Kind: TimerRetry, Key: string(id)}}); find[RestartICE](effs) == nil {
		t.Fatalf("no new offer after two unanswered rounds: %v", effs)
	}
}

// TestICERestartGivesUp: media not back within RestartTimeout (15 s)
// ends the call with ice_failed, js-sdk's CallErrorCode.IceFailed for a
// call disconnected too long; the device gets the hangup.
func TestICERestartGivesUp(t *testing.T) {
	h := newHarness(t)
	id := outboundCall(t, h)
	h.step(PeerChanged{CallID: id, State: callengine.PeerDisconnected})
	h.advance(DefaultDisconnectedGrace)
	h.step(TimerFired{ID: TimerID{Kind: TimerDisconnected, Key: string(id)}})
	h.advance(DefaultRestartTimeout)
	effs := h.step(TimerFired{ID: TimerID{Kind: TimerRestart, Key: string(id)}})
	hang := hangupOf(t, effs)
	if hang == nil || hang.Reason != callengine.ReasonICEFailed || find[ClosePeer](effs) == nil {
		t.Fatalf("give up: %v, want a hangup with ice_failed", effs)
	}
	for _, k := range []TimerKind{TimerRestart, TimerRetry, TimerDisconnected, TimerConnect} {
		if !timerStopped(effs, k, id) {
			t.Errorf("timer %d left running: %v", k, effs)
		}
	}
	if st := h.m.Status(h.now); len(st.Calls) != 0 {
		t.Errorf("calls after giving up: %+v", st.Calls)
	}
	// The ring timeout now runs for the device still a member.
	if h.m.Phase() != PhaseRinging {
		t.Errorf("phase %s, want ringing (the device may call again)", h.m.Phase())
	}
}

// TestRestartGlare: perfect negotiation. The intercom placed the call,
// so it is impolite: the device's offer that crosses its restart offer is
// dropped; once the restart is answered, the device's offers are answered.
func TestRestartGlare(t *testing.T) {
	h := newHarness(t)
	id := outboundCall(t, h)
	h.step(PeerChanged{CallID: id, State: callengine.PeerFailed})
	h.step(RestartOffered{CallID: id, SDP: "ours"})
	effs := h.step(zedEvent(t, "negotiate", negotiate(id, fxZed.DeviceID, "offer")))
	if find[AnswerNegotiation](effs) != nil {
		t.Fatalf("answered a colliding offer: %v", effs)
	}
	if ig := find[Ignored](effs); ig == nil || !strings.Contains(ig.Reason, "colliding") {
		t.Fatalf("colliding offer: %v", effs)
	}
	h.step(zedEvent(t, "negotiate", negotiate(id, fxZed.DeviceID, "answer")))
	effs = h.step(zedEvent(t, "negotiate", negotiate(id, fxZed.DeviceID, "offer")))
	if a := find[AnswerNegotiation](effs); a == nil || a.CallID != id {
		t.Fatalf("offer after the restart: %v", effs)
	}
	effs = h.step(NegotiationAnswered{CallID: id, SDP: "our-answer"})
	send := find[SendToDevice](effs)
	if send == nil || send.Type != "com.famedly.call.member.negotiate" {
		t.Fatalf("negotiate answer not sent: %v", effs)
	}
	var body struct {
		Description callengine.SessionDescription `json:"description"`
	}
	_ = json.Unmarshal(send.Content, &body)
	if body.Description.Type != "answer" || body.Description.SDP != "our-answer" {
		t.Errorf("negotiate answer %+v", body.Description)
	}
}

// TestInboundCallWaitsForCallersRestart: the device placed the call, so
// it restarts ICE (dart-sdk and js-sdk restart on failure); the intercom
// answers its offer and does not restart itself, and ends the call with
// ice_failed if the media is not back within RestartTimeout.
func TestInboundCallWaitsForCallersRestart(t *testing.T) {
	h := newHarness(t)
	h.join()
	connectedCall(t, h, "in1")
	id := callengine.CallID("in1")
	effs := h.step(PeerChanged{CallID: id, State: callengine.PeerFailed})
	if find[RestartICE](effs) != nil || hangupOf(t, effs) != nil {
		t.Fatalf("inbound failed: %v, want a wait for the caller", effs)
	}
	if _, ok := timerStarted(effs, TimerRestart, id); !ok {
		t.Fatalf("no restart bound: %v", effs)
	}
	off := negotiate(id, "TP", "offer")
	effs = h.step(toDevice(FamilyFamedly, "negotiate", fxTabletDev, fxTabletSes, fxSession, 1, off))
	if find[AnswerNegotiation](effs) == nil {
		t.Fatalf("caller's restart offer not answered: %v", effs)
	}
	effs = h.step(PeerChanged{CallID: id, State: callengine.PeerConnected})
	if !timerStopped(effs, TimerRestart, id) {
		t.Fatalf("recovered: %v", effs)
	}

	// Lost again, and the caller never restarts.
	h.step(PeerChanged{CallID: id, State: callengine.PeerDisconnected})
	h.advance(DefaultDisconnectedGrace)
	effs = h.step(TimerFired{ID: TimerID{Kind: TimerDisconnected, Key: string(id)}})
	if find[RestartICE](effs) != nil {
		t.Fatalf("intercom restarted a call it did not place: %v", effs)
	}
	h.advance(DefaultRestartTimeout)
	effs = h.step(TimerFired{ID: TimerID{Kind: TimerRestart, Key: string(id)}})
	if hang := hangupOf(t, effs); hang == nil || hang.Reason != callengine.ReasonICEFailed {
		t.Fatalf("give up: %v", effs)
	}
}

// TestFailedBeforeConnectEnds: a call that never connected has nothing
// to recover: failed ends it with ice_failed, as before.
func TestFailedBeforeConnectEnds(t *testing.T) {
	h := newHarness(t)
	h.member(fxZed.User, fxZed.DeviceID, fxZedSes, 6*time.Minute)
	offer := find[CreateOffer](h.join())
	id := offer.CallID
	h.step(OfferCreated{CallID: id, SDP: fxSDP, StreamID: "doorcam"})
	ans := &callengine.Answer{Common: callengine.Common{CallID: id, PartyID: "PHONE", Version: "1"},
		Answer: callengine.SessionDescription{Type: "answer", SDP: fxSDP}}
	h.step(zedEvent(t, "answer", ans))
	h.step(AnswerApplied{CallID: id})
	effs := h.step(PeerChanged{CallID: id, State: callengine.PeerFailed})
	if hang := hangupOf(t, effs); hang == nil || hang.Reason != callengine.ReasonICEFailed || find[RestartICE](effs) != nil {
		t.Fatalf("failed before connect: %v", effs)
	}
}
