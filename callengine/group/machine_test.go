package group

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/doorbell/intercom/callengine"
)

var t0 = time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)

// harness drives a machine for the intercom "@intercom:example.org"
// device INTERCOMDEV in the household room.
type harness struct {
	t   *testing.T
	m   *Machine
	now time.Time
	out []Effect // effects of the last step
}

func newHarness(t *testing.T) *harness {
	cfg := DefaultConfig(Device{User: fxIntercom, DeviceID: fxDevice}, fxSession, fxRoom)
	cfg.RingTimeout = 30 * time.Second
	return &harness{t: t, m: New(cfg), now: t0}
}

func (h *harness) step(ev Event) []Effect {
	h.t.Helper()
	h.out = h.m.Step(h.now, ev)
	return h.out
}

func (h *harness) advance(d time.Duration) { h.now = h.now.Add(d) }

// member publishes a famedly membership for user/device with session,
// expiring expires after now.
func (h *harness) member(user callengine.UserID, device, session string, expires time.Duration) []Effect {
	h.t.Helper()
	mb := NewOwnMembership(fxRoom, device, session, h.now)
	mb.ExpiresTS = h.now.Add(expires).UnixMilli()
	b, _ := json.Marshal(MemberContent{Memberships: []Membership{mb}})
	return h.step(MemberChanged{Event: MemberEvent{Type: TypeMember, StateKey: string(user), Sender: user, Content: b}})
}

func (h *harness) leaveMember(user callengine.UserID) []Effect {
	return h.step(MemberChanged{Event: MemberEvent{Type: TypeMember, StateKey: string(user), Sender: user, Content: []byte(`{"memberships":[]}`)}})
}

// join rings and confirms the membership.
func (h *harness) join() []Effect {
	h.t.Helper()
	h.step(RingRequested{})
	if find[PublishMembership](h.out) == nil {
		h.t.Fatalf("ring did not publish a membership: %v", h.out)
	}
	return h.step(MembershipPublished{EventID: "$m1"})
}

func find[T Effect](effs []Effect) *T {
	for _, e := range effs {
		if x, ok := e.(T); ok {
			return &x
		}
	}
	return nil
}

func all[T Effect](effs []Effect) []T {
	var out []T
	for _, e := range effs {
		if x, ok := e.(T); ok {
			out = append(out, x)
		}
	}
	return out
}

// toDevice builds a to-device event from sender's device with the given
// sessions, seq and call content.
func toDevice(fam Family, name string, device, senderSession, destSession string, seq int64, call any) ToDeviceReceived {
	s := seq
	b, err := EncodeToDevice(Envelope{RoomID: fxRoom, ConfID: string(fxRoom), DeviceID: device,
		SenderSessionID: senderSession, DestSessionID: destSession, Seq: &s}, call)
	if err != nil {
		panic(err)
	}
	return ToDeviceReceived{Sender: fxTablet, Type: ToDeviceType(fam, "m.call."+name), Content: b}
}

func invite(callID string) *callengine.Invite {
	return &callengine.Invite{Common: callengine.Common{CallID: callengine.CallID(callID), PartyID: "TP", Version: "1"},
		Lifetime: 60000, Offer: callengine.SessionDescription{Type: "offer", SDP: fxSDP}}
}

func cands(callID string, c ...string) *callengine.Candidates {
	x := &callengine.Candidates{Common: callengine.Common{CallID: callengine.CallID(callID), PartyID: "TP", Version: "1"}}
	for _, s := range c {
		x.Candidates = append(x.Candidates, callengine.Candidate{Candidate: s})
	}
	return x
}

func TestPlacesCall(t *testing.T) {
	for _, c := range []struct {
		local, remote Device
		want          bool
	}{
		{Device{"@a:x", "D"}, Device{"@b:x", "A"}, true},
		{Device{"@b:x", "A"}, Device{"@a:x", "D"}, false},
		{Device{"@a:x", "A"}, Device{"@a:x", "B"}, true},
		{Device{"@a:x", "B"}, Device{"@a:x", "A"}, false},
		// One string comparison, as dart-sdk: "@a:x:Z" > "@a:xy:A" is
		// false because ':' (0x3a) < 'y'.
		{Device{"@a:x", "Z"}, Device{"@a:xy", "A"}, true},
	} {
		if got := PlacesCall(c.local, c.remote); got != c.want {
			t.Errorf("PlacesCall(%v, %v) = %v, want %v", c.local, c.remote, got, c.want)
		}
	}
}

func TestStateKeyConventions(t *testing.T) {
	for _, c := range []struct {
		key    string
		kind   StateKeyKind
		device string
		err    bool
	}{
		{"@alice:example.org", KeyUser, "", false},
		{"@alice:example.org_TABLET", KeyUserDevice, "TABLET", false},
		{"TABLET_@alice:example.org", KeyDeviceUser, "TABLET", false},
		{"@bob:example.org", 0, "", true},
		{"@bob:example.org_TABLET", 0, "", true},
		{"@alice:example.org_", 0, "", true},
	} {
		kind, dev, err := ParseStateKey(c.key, fxTablet)
		if (err != nil) != c.err || kind != c.kind || dev != c.device {
			t.Errorf("ParseStateKey(%q) = %v %q %v", c.key, kind, dev, err)
		}
	}
	// Per-device keys only carry that device's entry.
	b, _ := json.Marshal(MemberContent{Memberships: []Membership{
		NewOwnMembership(fxRoom, "TABLET", "s1", t0), NewOwnMembership(fxRoom, "OTHER", "s2", t0)}})
	list, err := DecodeMember("@alice:example.org_TABLET", fxTablet, b)
	if err != nil || len(list) != 1 || list[0].DeviceID != "TABLET" {
		t.Errorf("per-device key: %v %v", list, err)
	}
}

func TestDecodeMemberDropsInvalidEntries(t *testing.T) {
	content := `{"memberships":[
		{"call_id":"!r:x","device_id":"A","expires_ts":1,"foci_active":[{"type":"mesh"}]},
		{"call_id":"!r:x","device_id":"B","expires_ts":"1","foci_active":[]},
		{"call_id":"!r:x","device_id":"C","expires_ts":1},
		{"call_id":1,"device_id":"D","expires_ts":1,"foci_active":[]},
		{"call_id":"!r:x","device_id":"E","expires_ts":1,"foci_active":[{"type":"livekit","livekit_service_url":"https://x"}]},
		{"call_id":"!r:x","device_id":"F","expires_ts":1,"foci_active":[{"type":"livekit","livekit_service_url":"https://x","livekit_alias":"!r:x"}]}
	]}`
	list, err := DecodeMember(string(fxTablet), fxTablet, []byte(content))
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, m := range list {
		got = append(got, m.DeviceID)
	}
	if strings.Join(got, ",") != "A,F" {
		t.Errorf("valid entries %v, want A,F", got)
	}
	for _, bad := range []string{`[]`, `"x"`, `{"memberships":{}}`, `null`} {
		if _, err := DecodeMember(string(fxTablet), fxTablet, []byte(bad)); err == nil {
			t.Errorf("DecodeMember(%s) accepted", bad)
		}
	}
	if l, err := DecodeMember(string(fxTablet), fxTablet, []byte(`{}`)); err != nil || l != nil {
		t.Errorf("{} = %v %v, want no devices", l, err)
	}
}

func TestExpiryWithGrace(t *testing.T) {
	mb := Membership{ExpiresTS: t0.UnixMilli()}
	for _, c := range []struct {
		at      time.Duration
		expired bool
	}{{-time.Minute, false}, {time.Minute, false}, {6 * time.Minute, false}, {6*time.Minute + time.Millisecond, true}} {
		if got := mb.Expired(t0.Add(c.at)); got != c.expired {
			t.Errorf("Expired at expires_ts%+v = %v, want %v", c.at, got, c.expired)
		}
	}

	// In the machine: a member whose expires_ts passed is still called
	// within the grace, and its call ends when the grace is over.
	h := newHarness(t)
	h.join()
	effs := h.member("@zed:example.org", "PHONE", "zs", -time.Minute)
	if find[CreateOffer](effs) == nil {
		t.Fatalf("member inside the grace period not called: %v", effs)
	}
	exp := find[StartTimer](effs)
	for _, st := range all[StartTimer](effs) {
		if st.ID.Kind == TimerExpiry {
			exp = &st
		}
	}
	if exp == nil || exp.ID.Kind != TimerExpiry || exp.After < 5*time.Minute || exp.After > 5*time.Minute+time.Second {
		t.Fatalf("expiry timer %+v, want about 5 min", exp)
	}
	h.advance(exp.After)
	effs = h.step(TimerFired{ID: exp.ID})
	if find[ClosePeer](effs) == nil {
		t.Errorf("expired member's call not closed: %v", effs)
	}
	if st := h.m.Status(h.now); len(st.Members) != 1 || st.Members[0].Valid {
		t.Errorf("status members %+v, want one invalid", st.Members)
	}
}

// connectedCall sets up an inbound call from the tablet (whose key sorts
// before the intercom's, so the tablet calls) and connects it.
func connectedCall(t *testing.T, h *harness, callID string) {
	t.Helper()
	h.member(fxTablet, fxTabletDev, fxTabletSes, 6*time.Minute)
	if find[CreateOffer](h.out) != nil {
		t.Fatal("intercom placed a call to a device that sorts before it")
	}
	effs := h.step(toDevice(FamilyFamedly, "invite", fxTabletDev, fxTabletSes, fxSession, 0, invite(callID)))
	acc := find[AcceptOffer](effs)
	if acc == nil || acc.CallID != callengine.CallID(callID) {
		t.Fatalf("invite not accepted: %v", effs)
	}
	effs = h.step(OfferAccepted{CallID: acc.CallID, SDP: fxSDP, StreamID: "s"})
	send := find[SendToDevice](effs)
	if send == nil || send.Type != "com.famedly.call.member.answer" || send.To != (Device{fxTablet, fxTabletDev}) {
		t.Fatalf("answer not sent in the famedly family: %v", effs)
	}
	var env Envelope
	_ = json.Unmarshal(send.Content, &env)
	if env.DestSessionID != fxTabletSes || env.SenderSessionID != fxSession || *env.Seq != 0 || env.RoomID != fxRoom {
		t.Errorf("answer envelope %+v", env)
	}
	h.step(PeerChanged{CallID: acc.CallID, State: callengine.PeerConnected})
	if h.m.Phase() != PhaseInCall {
		t.Fatalf("phase %s after connect", h.m.Phase())
	}
}

func TestRingJoinsNotifiesAndCallsHigherMembers(t *testing.T) {
	h := newHarness(t)
	// "@zed" sorts after "@intercom": the intercom calls it. "@alice"
	// sorts before: the intercom waits for its invite.
	h.member("@zed:example.org", "PHONE", "zs", 6*time.Minute)
	h.member(fxTablet, fxTabletDev, fxTabletSes, 6*time.Minute)
	if h.m.Joined() || find[CreateOffer](h.out) != nil {
		t.Fatal("idle intercom acted on memberships")
	}
	effs := h.step(RingRequested{})
	pub := find[PublishMembership](effs)
	if pub == nil || pub.StateKey != string(fxIntercom) || len(pub.Content.Memberships) != 1 || find[CreateOffer](effs) != nil {
		t.Fatalf("ring effects %v", effs)
	}
	effs = h.step(MembershipPublished{EventID: "$m1"})
	n := find[SendNotification](effs)
	if n == nil || n.Content.RelatesTo == nil || n.Content.RelatesTo.EventID != "$m1" || n.Content.NotificationType != "ring" {
		t.Fatalf("notification %v", effs)
	}
	offers := all[CreateOffer](effs)
	if len(offers) != 1 {
		t.Fatalf("offers %v, want one (to @zed)", offers)
	}
	effs = h.step(OfferCreated{CallID: offers[0].CallID, SDP: fxSDP, StreamID: "s"})
	inv := find[SendToDevice](effs)
	if inv == nil || inv.Type != "com.famedly.call.member.invite" || inv.To != (Device{"@zed:example.org", "PHONE"}) {
		t.Fatalf("invite %v", effs)
	}
	td, err := DecodeToDevice(inv.Type, inv.Content)
	if err != nil || td.DestSessionID != "zs" || td.DeviceID != fxDevice || *td.Seq != 0 {
		t.Fatalf("invite content %+v %v", td, err)
	}
	// Answer in the m.call family: the intercom follows.
	ans := &callengine.Answer{Common: callengine.Common{CallID: offers[0].CallID, PartyID: "PHONE", Version: "1"},
		Answer: callengine.SessionDescription{Type: "answer", SDP: fxSDP}}
	b, _ := EncodeToDevice(Envelope{RoomID: fxRoom, ConfID: string(fxRoom), SenderSessionID: "zs", DestSessionID: fxSession}, ans)
	effs = h.step(ToDeviceReceived{Sender: "@zed:example.org", Type: "m.call.answer", Content: b})
	if find[ApplyAnswer](effs) == nil {
		t.Fatalf("answer not applied: %v", effs)
	}
	effs = h.step(AnswerApplied{CallID: offers[0].CallID})
	sel := find[SendToDevice](effs)
	if sel == nil || sel.Type != "m.call.select_answer" {
		t.Fatalf("select_answer %v", effs)
	}
}

func TestNobodyJoinsBeforeRingTimeout(t *testing.T) {
	h := newHarness(t)
	h.join()
	h.advance(30 * time.Second)
	effs := h.step(TimerFired{ID: TimerID{Kind: TimerRing}})
	pub := find[PublishMembership](effs)
	if pub == nil || len(pub.Content.Memberships) != 0 || h.m.Phase() != PhaseIdle || h.m.Joined() {
		t.Fatalf("ring timeout: %v, phase %s", effs, h.m.Phase())
	}
}

func TestLastDeviceLeaves(t *testing.T) {
	h := newHarness(t)
	h.join()
	connectedCall(t, h, "call-1")
	h.advance(40 * time.Second)
	if effs := h.step(TimerFired{ID: TimerID{Kind: TimerRing}}); find[PublishMembership](effs) != nil {
		t.Fatal("left at ring timeout while a device is connected")
	}
	// The member leaves the call: its membership list no longer holds it.
	effs := h.leaveMember(fxTablet)
	hang := find[SendToDevice](effs)
	if hang == nil || hang.Type != "com.famedly.call.member.hangup" || find[ClosePeer](effs) == nil {
		t.Fatalf("leave: %v", effs)
	}
	if pub := find[PublishMembership](effs); pub == nil || len(pub.Content.Memberships) != 0 || h.m.Phase() != PhaseIdle {
		t.Fatalf("intercom did not leave after the last device: %v", effs)
	}
}

func TestRoomLeaveDropsMember(t *testing.T) {
	h := newHarness(t)
	h.join()
	connectedCall(t, h, "call-1")
	effs := h.step(RoomMemberChanged{User: fxTablet, Membership: "leave"})
	if find[ClosePeer](effs) == nil || h.m.Phase() != PhaseIdle {
		t.Fatalf("room leave: %v", effs)
	}
}

func TestStaleSession(t *testing.T) {
	h := newHarness(t)
	h.join()
	connectedCall(t, h, "call-1")
	// The app restarted: same device, new membershipID. The old call ends.
	effs := h.member(fxTablet, fxTabletDev, "new-session", 6*time.Minute)
	if c := find[ClosePeer](effs); c == nil || c.CallID != "call-1" {
		t.Fatalf("call of the old session not ended: %v", effs)
	}
	// Events still carrying the old session are ignored.
	effs = h.step(toDevice(FamilyFamedly, "invite", fxTabletDev, fxTabletSes, fxSession, 0, invite("call-2")))
	if ig := find[Ignored](effs); ig == nil || !strings.Contains(ig.Reason, "stale session") || find[AcceptOffer](effs) != nil {
		t.Fatalf("stale session invite: %v", effs)
	}
	// The new session's invite is answered.
	effs = h.step(toDevice(FamilyFamedly, "invite", fxTabletDev, "new-session", fxSession, 0, invite("call-3")))
	if find[AcceptOffer](effs) == nil {
		t.Fatalf("new session invite: %v", effs)
	}
}

func TestWrongDestSessionAndEnvelope(t *testing.T) {
	h := newHarness(t)
	h.join()
	h.member(fxTablet, fxTabletDev, fxTabletSes, 6*time.Minute)
	for _, c := range []struct {
		name   string
		ev     ToDeviceReceived
		reason string
	}{
		{"wrong dest_session_id", toDevice(FamilyFamedly, "invite", fxTabletDev, fxTabletSes, "previous-run", 0, invite("c1")), "dest_session_id"},
		{"no room_id", ToDeviceReceived{Sender: fxTablet, Type: "com.famedly.call.member.invite",
			Content: []byte(`{"call_id":"c","version":"1","lifetime":1,"offer":{"type":"offer","sdp":"v=0"},"conf_id":"x","sender_session_id":"a","dest_session_id":"b"}`)}, "room_id"},
		{"other type", ToDeviceReceived{Sender: fxTablet, Type: "m.room_key", Content: []byte(`{}`)}, "unknown event type"},
	} {
		effs := h.step(c.ev)
		if ig := find[Ignored](effs); ig == nil || !strings.Contains(ig.Reason, c.reason) || find[AcceptOffer](effs) != nil {
			t.Errorf("%s: %v", c.name, effs)
		}
	}
}

func TestNonMemberSender(t *testing.T) {
	h := newHarness(t)
	h.join()
	// No membership at all.
	effs := h.step(toDevice(FamilyFamedly, "invite", fxTabletDev, fxTabletSes, fxSession, 0, invite("c1")))
	if ig := find[Ignored](effs); ig == nil || !strings.Contains(ig.Reason, "not a member") {
		t.Fatalf("non-member: %v", effs)
	}
	// A membership of another call (LiveKit focus) does not count either.
	mb := NewOwnMembership(fxRoom, fxTabletDev, fxTabletSes, h.now)
	mb.FociActive = []Focus{{Type: "livekit", LiveKitAlias: "a", LiveKitServiceURL: "u"}}
	b, _ := json.Marshal(MemberContent{Memberships: []Membership{mb}})
	h.step(MemberChanged{Event: MemberEvent{Type: TypeMember, StateKey: string(fxTablet), Sender: fxTablet, Content: b}})
	effs = h.step(toDevice(FamilyFamedly, "invite", fxTabletDev, fxTabletSes, fxSession, 0, invite("c1")))
	if ig := find[Ignored](effs); ig == nil || !strings.Contains(ig.Reason, "not a member") {
		t.Fatalf("livekit member: %v", effs)
	}
	// A membership planted under someone else's state key is refused.
	b, _ = json.Marshal(MemberContent{Memberships: []Membership{NewOwnMembership(fxRoom, fxTabletDev, fxTabletSes, h.now)}})
	effs = h.step(MemberChanged{Event: MemberEvent{Type: TypeMember, StateKey: "@mallory:example.org", Sender: fxTablet, Content: b}})
	if find[Ignored](effs) == nil {
		t.Fatalf("foreign state key: %v", effs)
	}
}

func TestOutOfOrderSeq(t *testing.T) {
	h := newHarness(t)
	h.join()
	h.member(fxTablet, fxTabletDev, fxTabletSes, 6*time.Minute)
	// Candidates (seq 1, 2) overtake the invite (seq 0).
	effs := h.step(toDevice(FamilyFamedly, "candidates", "", fxTabletSes, fxSession, 2, cands("c1", "candidate:2")))
	if len(all[ApplyCandidates](effs)) != 0 || find[Ignored](effs) != nil {
		t.Fatalf("seq 2 not held: %v", effs)
	}
	if st := find[StartTimer](effs); st == nil || st.ID.Kind != TimerReorder {
		t.Fatalf("no reorder timer: %v", effs)
	}
	h.step(toDevice(FamilyFamedly, "candidates", "", fxTabletSes, fxSession, 1, cands("c1", "candidate:1")))
	effs = h.step(toDevice(FamilyFamedly, "invite", fxTabletDev, fxTabletSes, fxSession, 0, invite("c1")))
	if find[AcceptOffer](effs) == nil {
		t.Fatalf("invite after reorder: %v", effs)
	}
	effs = h.step(OfferAccepted{CallID: "c1", SDP: fxSDP})
	ac := find[ApplyCandidates](effs)
	if ac == nil || len(ac.Candidates) != 2 || ac.Candidates[0].Candidate != "candidate:1" || ac.Candidates[1].Candidate != "candidate:2" {
		t.Fatalf("candidates not applied in seq order: %v", effs)
	}
	// A duplicate is dropped.
	effs = h.step(toDevice(FamilyFamedly, "candidates", "", fxTabletSes, fxSession, 1, cands("c1", "candidate:1")))
	if find[ApplyCandidates](effs) != nil {
		t.Fatalf("duplicate seq applied: %v", effs)
	}
	// A gap that never fills is skipped after ReorderWait.
	h.step(toDevice(FamilyFamedly, "candidates", "", fxTabletSes, fxSession, 5, cands("c1", "candidate:5")))
	h.advance(ReorderWait)
	effs = h.step(TimerFired{ID: TimerID{Kind: TimerReorder, Key: reorderKey(fxTablet, "c1")}})
	if ac := find[ApplyCandidates](effs); ac == nil || ac.Candidates[0].Candidate != "candidate:5" {
		t.Fatalf("gap not skipped: %v", effs)
	}
}

func TestReorderUnit(t *testing.T) {
	var r Reorder
	ev := func(seq int64) ToDevice { s := seq; return ToDevice{Envelope: Envelope{Seq: &s}} }
	seqs := func(tds []ToDevice) string {
		var s []string
		for _, td := range tds {
			s = append(s, fmt.Sprint(*td.Seq))
		}
		return strings.Join(s, ",")
	}
	steps := []struct {
		seq  int64
		want string
	}{{1, ""}, {3, ""}, {0, "0,1"}, {2, "2,3"}, {2, ""}, {4, "4"}}
	for _, s := range steps {
		if got := seqs(r.Push(t0, ev(s.seq))); got != s.want {
			t.Errorf("push %d → %q, want %q", s.seq, got, s.want)
		}
	}
	if got := r.Push(t0, ToDevice{}); len(got) != 1 {
		t.Error("event without seq held")
	}
	for i := int64(0); i <= MaxReorderBuffer; i++ {
		r.Push(t0, ev(100+i))
	}
	if len(r.buf) != 0 || r.next != 100+MaxReorderBuffer+1 {
		t.Errorf("full buffer not flushed: %d held, next %d", len(r.buf), r.next)
	}
}

func TestHangupEndsCallAndIdleAfterLast(t *testing.T) {
	h := newHarness(t)
	h.join()
	connectedCall(t, h, "c1")
	hang := &callengine.Hangup{Common: callengine.Common{CallID: "c1", PartyID: "TP", Version: "1"}}
	effs := h.step(toDevice(FamilyMatrix, "hangup", "", fxTabletSes, fxSession, 1, hang))
	// Still a member: it gets the ring timeout to call again.
	if find[ClosePeer](effs) == nil || h.m.Phase() != PhaseRinging || find[StartTimer](effs) == nil {
		t.Fatalf("hangup: %v (phase %s)", effs, h.m.Phase())
	}
	// dart-sdk's leave: the membership goes too. The intercom leaves.
	effs = h.leaveMember(fxTablet)
	if pub := find[PublishMembership](effs); pub == nil || h.m.Phase() != PhaseIdle {
		t.Fatalf("after the member left: %v (phase %s)", effs, h.m.Phase())
	}
	// m.call.* to the idle intercom is ignored.
	effs = h.step(toDevice(FamilyMatrix, "invite", fxTabletDev, fxTabletSes, fxSession, 0, invite("c2")))
	if ig := find[Ignored](effs); ig == nil || !strings.Contains(ig.Reason, "not in the group call") {
		t.Fatalf("idle invite: %v", effs)
	}
}

func TestRefreshAndElementCallStatus(t *testing.T) {
	h := newHarness(t)
	h.join()
	h.advance(RefreshInterval)
	effs := h.step(TimerFired{ID: TimerID{Kind: TimerRefresh}})
	pub := find[PublishMembership](effs)
	if pub == nil || pub.Content.Memberships[0].ExpiresTS != h.now.Add(ExpireBump).UnixMilli() {
		t.Fatalf("refresh: %v", effs)
	}
	raw := []byte(`{"application":"m.call","call_id":"","device_id":"EC","focus_active":{"type":"livekit"},"expires":60000}`)
	h.step(MemberChanged{Event: MemberEvent{Type: TypeElementCallMember, StateKey: "_@bob:example.org_EC_m.call", Sender: "@bob:example.org", Content: raw, Timestamp: h.now}})
	st := h.m.Status(h.now)
	if len(st.ElementCall) != 1 || st.ElementCall[0].DeviceID != "EC" || len(st.Members) != 0 {
		t.Fatalf("status %+v", st)
	}
	h.step(MemberChanged{Event: MemberEvent{Type: TypeElementCallMember, StateKey: "_@bob:example.org_EC_m.call", Sender: "@bob:example.org", Content: []byte(`{}`)}})
	if st := h.m.Status(h.now); len(st.ElementCall) != 0 {
		t.Fatalf("element call leave not applied: %+v", st.ElementCall)
	}
}

// TestAnsweredElsewhere: another path took the ring. Rung with nobody
// connected, the intercom leaves the household call; once a device has
// connected the ring is closed and a withdraw changes nothing.
func TestAnsweredElsewhere(t *testing.T) {
	h := newHarness(t)
	h.member("@zed:example.org", "PHONE", "zs", 6*time.Minute)
	h.join()
	if st := h.m.Status(h.now); !st.Rung || st.Phase != PhaseRinging {
		t.Fatalf("after the ring: %+v", st)
	}
	effs := h.step(AnsweredElsewhere{})
	pub := find[PublishMembership](effs)
	if pub == nil || len(pub.Content.Memberships) != 0 {
		t.Fatalf("withdraw did not clear the membership: %v", effs)
	}
	if st := h.m.Status(h.now); st.Rung || st.Phase != PhaseIdle || st.Joined {
		t.Fatalf("after withdraw: %+v", st)
	}
	if effs := h.step(AnsweredElsewhere{}); len(effs) != 0 {
		t.Fatalf("second withdraw: %v", effs)
	}

	// A device answered here: the ring is closed and stays answered.
	h = newHarness(t)
	h.join()
	connectedCall(t, h, "c1")
	if st := h.m.Status(h.now); st.Rung {
		t.Fatalf("still rung after a device connected: %+v", st)
	}
	if effs := h.step(AnsweredElsewhere{}); len(effs) != 0 || h.m.Phase() != PhaseInCall {
		t.Fatalf("withdraw after an answer: phase %s effects %v", h.m.Phase(), effs)
	}
}
