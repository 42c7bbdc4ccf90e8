package group

import (
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/doorbell/intercom/callengine"
)

// Issue 19, finding 5: one household member could make the door open a
// PeerConnection per membership state key it publishes.

// deviceMember publishes user's device under its own state key
// ("<user>_<device>", famedly's msc3757 form).
func (h *harness) deviceMember(user callengine.UserID, device, session string) []Effect {
	h.t.Helper()
	mb := NewOwnMembership(fxRoom, device, session, h.now)
	b, _ := json.Marshal(MemberContent{Memberships: []Membership{mb}})
	return h.step(MemberChanged{Event: MemberEvent{Type: TypeMember, StateKey: string(user) + "_" + device, Sender: user, Content: b}})
}

// peersMade counts the peers the effects ask for.
func peersMade(effs []Effect) int { return len(all[CreateOffer](effs)) + len(all[AcceptOffer](effs)) }

func TestDevicesPerUserCapped(t *testing.T) {
	const want = DefaultMaxDevicesPerUser
	t.Run("the intercom calls", func(t *testing.T) {
		// "@zed" sorts after "@intercom": the intercom places the calls.
		h := newHarness(t)
		h.join()
		made := 0
		for i := range 100 {
			made += peersMade(h.deviceMember("@zed:example.org", fmt.Sprintf("DEV%03d", i), fmt.Sprintf("s%03d", i)))
		}
		if made > want {
			t.Fatalf("%d peers for one user's 100 devices, want at most %d", made, want)
		}
		if made != want {
			t.Fatalf("%d peers, want %d: the cap must not shut the user out", made, want)
		}
	})
	t.Run("the devices call", func(t *testing.T) {
		// "@alice" sorts before "@intercom": every device invites.
		h := newHarness(t)
		h.join()
		made := 0
		for i := range 100 {
			dev, ses := fmt.Sprintf("DEV%03d", i), fmt.Sprintf("s%03d", i)
			made += peersMade(h.deviceMember(fxTablet, dev, ses))
			made += peersMade(h.step(toDevice(FamilyFamedly, "invite", dev, ses, fxSession, 0, invite("call-"+dev))))
		}
		if made != want {
			t.Fatalf("%d peers for one user's 100 invites, want %d", made, want)
		}
	})
	t.Run("one state key with a long list", func(t *testing.T) {
		h := newHarness(t)
		h.join()
		var list []Membership
		for i := range MaxMemberships {
			list = append(list, NewOwnMembership(fxRoom, fmt.Sprintf("DEV%03d", i), fmt.Sprintf("s%03d", i), h.now))
		}
		b, _ := json.Marshal(MemberContent{Memberships: list})
		effs := h.step(MemberChanged{Event: MemberEvent{Type: TypeMember, StateKey: "@zed:example.org", Sender: "@zed:example.org", Content: b}})
		if made := peersMade(effs); made != want {
			t.Fatalf("%d peers for %d devices in one list, want %d", made, MaxMemberships, want)
		}
	})
}

func TestCallsCapped(t *testing.T) {
	const want = DefaultMaxCalls
	h := newHarness(t)
	h.join()
	made := 0
	for i := range 20 {
		made += peersMade(h.member(callengine.UserID(fmt.Sprintf("@zed%02d:example.org", i)), "PHONE", fmt.Sprintf("s%02d", i), 6*time.Minute))
	}
	if made != want {
		t.Fatalf("%d peers for 20 users, want %d", made, want)
	}
	// A device calling in while every slot is taken is refused at once.
	h.member(fxTablet, fxTabletDev, fxTabletSes, 6*time.Minute)
	effs := h.step(toDevice(FamilyFamedly, "invite", fxTabletDev, fxTabletSes, fxSession, 0, invite("call-full")))
	if peersMade(effs) != 0 {
		t.Fatalf("invite accepted beyond the call cap: %v", effs)
	}
	if rej := find[SendToDevice](effs); rej == nil || rej.Type != "com.famedly.call.member.reject" {
		t.Fatalf("invite beyond the call cap not rejected: %v", effs)
	}
}

// A device in a call keeps it when another device of the same user,
// whose state key sorts first, joins beyond the cap.
func TestDeviceCapKeepsCalls(t *testing.T) {
	h := newHarness(t)
	h.m.cfg.MaxDevicesPerUser = 1
	h.join()
	effs := h.deviceMember("@zed:example.org", "PHONE", "sp")
	offer := find[CreateOffer](effs)
	if offer == nil {
		t.Fatalf("no call to the first device: %v", effs)
	}
	effs = h.deviceMember("@zed:example.org", "ATABLET", "st")
	if find[ClosePeer](effs) != nil || peersMade(effs) != 0 {
		t.Fatalf("a second device beyond the cap changed the calls: %v", effs)
	}
	if st := h.m.Status(h.now); len(st.Members) != 2 || st.Members[0].DeviceID != "ATABLET" || st.Members[0].Valid || !st.Members[1].Valid {
		t.Fatalf("status members %+v, want ATABLET listed as not valid", st.Members)
	}
	// The call ends; the device the cap admits next is the first by state key.
	effs = h.step(PeerChanged{CallID: offer.CallID, State: callengine.PeerFailed})
	if find[ClosePeer](effs) == nil {
		t.Fatalf("call not ended: %v", effs)
	}
	effs = h.deviceMember("@zed:example.org", "ATABLET", "st")
	if peersMade(effs) != 1 {
		t.Fatalf("no call to the admitted device: %v", effs)
	}
}

// TestExpiredDevicesFreeTheirSlots: a user's devices in calls whose
// memberships expire before the expiry check fires (TimerExpiry comes on
// its own schedule) still held calls when the intercom's own membership
// was published again and a further device of the same user was called:
// three devices against a limit of two (found by FuzzMachine). The
// expired devices' calls now end before another device is called.
func TestExpiredDevicesFreeTheirSlots(t *testing.T) {
	h := newHarness(t)
	h.m.cfg.MaxDevicesPerUser = 2
	zed := callengine.UserID("@zed:example.org")
	h.deviceMember(zed, "D0", "s0")
	h.deviceMember(zed, "D2", "s2")
	h.join()
	if n := len(h.m.Status(h.now).Calls); n != 2 {
		t.Fatalf("%d calls after the ring, want D0 and D2", n)
	}
	// A third device joins while the two are in calls: not called.
	h.advance(10 * time.Minute)
	if made := peersMade(h.deviceMember(zed, "D4", "s4")); made != 0 {
		t.Fatalf("a third device called against a limit of two")
	}
	// Past the two memberships' expiry and grace, without the expiry
	// check; the intercom's membership comes back from a refresh.
	h.advance(ExpireBump + ExpiryGrace - 10*time.Minute + time.Second)
	effs := h.step(MembershipPublished{EventID: "$m2"})
	devs := map[string]bool{}
	for _, c := range h.m.Status(h.now).Calls {
		if c.User == zed {
			devs[c.DeviceID] = true
		}
	}
	if len(devs) > 2 {
		t.Fatalf("zed has devices %v in calls, at most 2", devs)
	}
	if !devs["D4"] || devs["D0"] || devs["D2"] {
		t.Errorf("zed's devices in calls %v, want only D4 (D0 and D2 expired); effects %v", devs, effs)
	}
	if n := len(all[ClosePeer](effs)); n != 2 {
		t.Errorf("%d peers closed, want the two expired devices': %v", n, effs)
	}
}
