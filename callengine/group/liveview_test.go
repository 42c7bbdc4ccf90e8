package group

import (
	"strings"
	"testing"
	"time"

	"github.com/doorbell/intercom/callengine"
)

// newLiveHarness is newHarness with live_view.allowed set to users.
func newLiveHarness(t *testing.T, users ...callengine.UserID) *harness {
	h := newHarness(t)
	h.m.cfg.LiveView = map[callengine.UserID]bool{}
	for _, u := range users {
		h.m.cfg.LiveView[u] = true
	}
	return h
}

// liveJoin checks that the last step joined the call for a live view
// (membership, no ring) and confirms the membership.
func (h *harness) liveJoin() []Effect {
	h.t.Helper()
	pub := find[PublishMembership](h.out)
	if pub == nil || len(pub.Content.Memberships) != 1 || find[SendNotification](h.out) != nil {
		h.t.Fatalf("live view join: %v", h.out)
	}
	if h.m.Phase() != PhaseLiveView || !h.m.Joined() || !h.m.Status(h.now).LiveView {
		h.t.Fatalf("phase %s joined %v after a live view join", h.m.Phase(), h.m.Joined())
	}
	effs := h.step(MembershipPublished{EventID: "$m1"})
	if find[SendNotification](effs) != nil {
		h.t.Fatalf("live view rang the household: %v", effs)
	}
	return effs
}

// A device that sorts before the intercom joins while nobody rang: the
// intercom joins without ringing, answers the device's invite, and leaves
// when the device leaves.
func TestLiveViewLowerDeviceCalls(t *testing.T) {
	h := newLiveHarness(t, fxTablet)
	h.member(fxTablet, fxTabletDev, fxTabletSes, 6*time.Minute)
	if effs := h.liveJoin(); find[CreateOffer](effs) != nil {
		t.Fatalf("intercom called a device that sorts before it: %v", effs)
	}
	effs := h.step(toDevice(FamilyFamedly, "invite", fxTabletDev, fxTabletSes, fxSession, 0, invite("lv-1")))
	acc := find[AcceptOffer](effs)
	if acc == nil {
		t.Fatalf("live view invite not answered: %v", effs)
	}
	effs = h.step(OfferAccepted{CallID: acc.CallID, SDP: fxSDP, StreamID: "s"})
	if s := find[SendToDevice](effs); s == nil || s.Type != "com.famedly.call.member.answer" {
		t.Fatalf("answer: %v", effs)
	}
	h.step(PeerChanged{CallID: acc.CallID, State: callengine.PeerConnected})
	if h.m.Phase() != PhaseInCall {
		t.Fatalf("phase %s after connect", h.m.Phase())
	}
	// Past the ring timeout a connected live view stays.
	h.advance(h.m.cfg.RingTimeout)
	if effs := h.step(TimerFired{ID: TimerID{Kind: TimerRing}}); find[PublishMembership](effs) != nil {
		t.Fatalf("connected live view left at the timeout: %v", effs)
	}
	effs = h.leaveMember(fxTablet)
	if find[ClosePeer](effs) == nil || h.m.Phase() != PhaseIdle || h.m.Joined() {
		t.Fatalf("last device left: %v (phase %s)", effs, h.m.Phase())
	}
	if pub := find[PublishMembership](effs); pub == nil || len(pub.Content.Memberships) != 0 {
		t.Fatalf("no leave membership: %v", effs)
	}
}

// A device that sorts after the intercom: the intercom places the call
// once its membership is in.
func TestLiveViewHigherDeviceIsCalled(t *testing.T) {
	const zed = callengine.UserID("@zed:example.org")
	h := newLiveHarness(t, zed)
	h.member(zed, "PHONE", "zs", 6*time.Minute)
	if find[CreateOffer](h.out) != nil {
		t.Fatalf("call placed before the membership was in: %v", h.out)
	}
	effs := h.liveJoin()
	offers := all[CreateOffer](effs)
	if len(offers) != 1 {
		t.Fatalf("offers %v, want one to zed", effs)
	}
	effs = h.step(OfferCreated{CallID: offers[0].CallID, SDP: fxSDP, StreamID: "s"})
	if inv := find[SendToDevice](effs); inv == nil || inv.Type != "com.famedly.call.member.invite" || inv.To != (Device{zed, "PHONE"}) {
		t.Fatalf("invite: %v", effs)
	}
}

// Only users in live_view.allowed start or take part in a live view;
// the others are connected once the bell rings.
func TestLiveViewOnlyAllowedUsers(t *testing.T) {
	const (
		zed = callengine.UserID("@zed:example.org") // sorts after: the intercom would call
		bob = callengine.UserID("@bob:example.org") // sorts before: bob would call
	)
	h := newLiveHarness(t, fxTablet)
	h.member(zed, "PHONE", "zs", 6*time.Minute)
	h.member(bob, "LAPTOP", "bs", 6*time.Minute)
	if h.m.Joined() || h.m.Phase() != PhaseIdle {
		t.Fatalf("a device not allowed to watch started a live view: %v", h.out)
	}
	h.member(fxTablet, fxTabletDev, fxTabletSes, 6*time.Minute)
	if effs := h.liveJoin(); find[CreateOffer](effs) != nil {
		t.Fatalf("live view called a device not allowed to watch: %v", effs)
	}
	// bob calls: held, neither answered nor refused.
	bobInvite := toDevice(FamilyFamedly, "invite", "LAPTOP", "bs", fxSession, 0, invite("bob-1"))
	bobInvite.Sender = bob
	effs := h.step(bobInvite)
	if find[AcceptOffer](effs) != nil || find[SendToDevice](effs) != nil {
		t.Fatalf("live view answered a device not allowed to watch: %v", effs)
	}
	if ig := find[Ignored](effs); ig == nil || !strings.Contains(ig.Reason, "live_view.allowed") {
		t.Fatalf("no reason logged: %v", effs)
	}
	if st := h.m.Status(h.now); len(st.Calls) != 1 || st.Calls[0].State != string(legHeld) {
		t.Fatalf("status calls %+v", st.Calls)
	}
	// The bell rings: everyone is rung and connected.
	effs = h.step(RingRequested{})
	if n := find[SendNotification](effs); n == nil || n.Content.RelatesTo == nil || n.Content.RelatesTo.EventID != "$m1" {
		t.Fatalf("ring during a live view: %v", effs)
	}
	if acc := find[AcceptOffer](effs); acc == nil || acc.CallID != "bob-1" {
		t.Fatalf("held invite not answered at the ring: %v", effs)
	}
	if offers := all[CreateOffer](effs); len(offers) != 1 {
		t.Fatalf("ring did not call zed: %v", effs)
	}
	if h.m.Phase() != PhaseRinging || h.m.Status(h.now).LiveView {
		t.Fatalf("phase %s after the ring", h.m.Phase())
	}
}

// A held invite is refused when the live view ends, and the live view
// ends when the last device allowed to watch leaves, even if others stay.
func TestLiveViewEndsWithLastAllowedDevice(t *testing.T) {
	const bob = callengine.UserID("@bob:example.org")
	h := newLiveHarness(t, fxTablet)
	h.member(bob, "LAPTOP", "bs", 6*time.Minute)
	h.member(fxTablet, fxTabletDev, fxTabletSes, 6*time.Minute)
	h.liveJoin()
	bobInvite := toDevice(FamilyFamedly, "invite", "LAPTOP", "bs", fxSession, 0, invite("bob-1"))
	bobInvite.Sender = bob
	h.step(bobInvite)
	effs := h.leaveMember(fxTablet)
	rej := find[SendToDevice](effs)
	if rej == nil || rej.Type != "com.famedly.call.member.reject" || rej.To != (Device{bob, "LAPTOP"}) {
		t.Fatalf("held invite not refused: %v", effs)
	}
	if h.m.Phase() != PhaseIdle || h.m.Joined() {
		t.Fatalf("live view went on without an allowed device: phase %s", h.m.Phase())
	}
}

// Nobody connects: the intercom leaves at the ring timeout and does not
// come back for the same membership (its refreshes included), only when
// the device joins again.
func TestLiveViewTimeoutAndRejoin(t *testing.T) {
	h := newLiveHarness(t, fxTablet)
	h.member(fxTablet, fxTabletDev, fxTabletSes, 6*time.Minute)
	h.liveJoin()
	h.advance(h.m.cfg.RingTimeout)
	effs := h.step(TimerFired{ID: TimerID{Kind: TimerRing}})
	if pub := find[PublishMembership](effs); pub == nil || len(pub.Content.Memberships) != 0 || h.m.Phase() != PhaseIdle {
		t.Fatalf("live view timeout: %v (phase %s)", effs, h.m.Phase())
	}
	h.advance(2 * time.Minute)
	if effs := h.member(fxTablet, fxTabletDev, fxTabletSes, 6*time.Minute); h.m.Joined() {
		t.Fatalf("a membership refresh started a live view again: %v", effs)
	}
	h.leaveMember(fxTablet)
	h.member(fxTablet, fxTabletDev, fxTabletSes, 6*time.Minute)
	h.liveJoin()
}

// A ring while a live view's membership is still on its way: the ring
// notification follows the membership and relates to it.
func TestRingWhileLiveViewJoins(t *testing.T) {
	h := newLiveHarness(t, fxTablet)
	h.member(fxTablet, fxTabletDev, fxTabletSes, 6*time.Minute)
	effs := h.step(RingRequested{})
	if find[SendNotification](effs) != nil || find[PublishMembership](effs) != nil {
		t.Fatalf("ring before the membership was in: %v", effs)
	}
	effs = h.step(MembershipPublished{EventID: "$m1"})
	if n := find[SendNotification](effs); n == nil || n.Content.RelatesTo.EventID != "$m1" {
		t.Fatalf("ring after the membership: %v", effs)
	}
	if h.m.Phase() != PhaseRinging {
		t.Fatalf("phase %s", h.m.Phase())
	}
}

// Without live_view.allowed (nil) memberships never make the intercom
// join.
func TestNoLiveViewWithoutAllowedUsers(t *testing.T) {
	h := newHarness(t)
	h.member(fxTablet, fxTabletDev, fxTabletSes, 6*time.Minute)
	if h.m.Joined() || len(h.out) != 1 { // the expiry timer only
		t.Fatalf("idle intercom acted: %v", h.out)
	}
}
