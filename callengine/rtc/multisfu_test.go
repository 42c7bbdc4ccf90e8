package rtc

import (
	"context"
	"encoding/json"
	"testing"
	"testing/synctest"
	"time"

	"github.com/doorbell/intercom/callengine"
	"github.com/doorbell/intercom/callengine/group"
)

const otherSFU = "https://rtc.other.example/livekit/jwt"

// joinEventOn is d's membership as Element Call writes it in a multi-SFU
// call, publishing on the transport of serviceURL.
func joinEventOn(d Device, at time.Time, serviceURL string) group.MemberEvent {
	ev := joinEvent(d, at)
	var c map[string]any
	_ = json.Unmarshal(ev.Content, &c)
	c["foci_preferred"] = []any{map[string]any{"type": "livekit", "livekit_service_url": serviceURL, "livekit_alias": "!a:example.org"}}
	ev.Content, _ = json.Marshal(c)
	return ev
}

// TestMultiSFUMachine: a member publishing on another transport makes the
// intercom listen there; one on the intercom's own does not; leaving and
// hanging up leave those SFUs; a lost one counts its publishers absent.
func TestMultiSFUMachine(t *testing.T) {
	m := newMachine()
	ringAndNotify(t, m)
	at := t0.Add(time.Second)
	effs := m.Step(at, MemberChanged{Room: roomA, Event: joinEventOn(alice, at, otherSFU+"/")})
	if j := find[JoinRemoteSFU](effs); len(j) != 1 || j[0].Room != roomA || j[0].ServiceURL != otherSFU {
		t.Fatalf("alice on another SFU: %v", effs)
	}
	// bob (in his own room) publishes on the intercom's transport.
	effs = m.Step(at, MemberChanged{Room: roomB, Event: joinEventOn(bob, at, "https://rtc.example.org/livekit/jwt")})
	if j := find[JoinRemoteSFU](effs); len(j) != 0 {
		t.Fatalf("joined the intercom's own SFU as a remote one: %v", effs)
	}
	// A refresh of alice's membership changes nothing.
	if effs = m.Step(at, MemberChanged{Room: roomA, Event: joinEventOn(alice, at, otherSFU)}); len(find[JoinRemoteSFU](effs))+len(find[LeaveRemoteSFU](effs)) != 0 {
		t.Fatalf("refresh: %v", effs)
	}
	// Present at her SFU, then that connection is lost: absent, so the
	// presence grace runs.
	m.Step(at, ParticipantChanged{Room: roomA, Identity: alice.Identity(), Present: true})
	effs = m.Step(at, RemoteSFUChanged{Room: roomA, ServiceURL: otherSFU, Err: context.Canceled})
	if st := find[StartTimer](effs); len(st) != 1 || st[0].ID != (TimerID{Kind: TimerPresence, Room: roomA}) {
		t.Fatalf("lost remote SFU: %v", effs)
	}
	// The next change of her membership joins it again.
	effs = m.Step(at, MemberChanged{Room: roomA, Event: joinEventOn(alice, at, otherSFU)})
	if j := find[JoinRemoteSFU](effs); len(j) != 1 {
		t.Fatalf("after the loss: %v", effs)
	}
	effs = m.Step(at, HangupRequested{})
	if l := find[LeaveRemoteSFU](effs); len(l) != 1 || l[0].ServiceURL != otherSFU {
		t.Fatalf("hangup: %v", effs)
	}
}

// TestMultiSFUMemberLeaves: the remote SFU is left with the last member
// publishing there.
func TestMultiSFUMemberLeaves(t *testing.T) {
	m := newMachine()
	m.Step(t0, RingRequested{Targets: []Target{{Room: roomA, Residents: []callengine.UserID{alice.User, bob.User}}}})
	m.Step(t0, MemberChanged{Room: roomA, Event: joinEventOn(alice, t0, otherSFU)})
	m.Step(t0, MemberChanged{Room: roomA, Event: joinEventOn(bob, t0, otherSFU)})
	if effs := m.Step(t0, MemberChanged{Room: roomA, Event: leaveEvent(bob, t0)}); len(find[LeaveRemoteSFU](effs)) != 0 {
		t.Fatalf("left while alice still publishes there: %v", effs)
	}
	effs := m.Step(t0, MemberChanged{Room: roomA, Event: leaveEvent(alice, t0)})
	if l := find[LeaveRemoteSFU](effs); len(l) != 1 {
		t.Fatalf("last member left: %v", effs)
	}
}

// TestRunnerMultiSFU: the runner opens the subscribe-only connection,
// counts presence there, and closes it when the call ends.
func TestRunnerMultiSFU(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := startRTC(t, &fakeSFU{})
		h.ring(t)
		h.r.HandleState(stateOf(roomA, joinEventOn(alice, time.Now(), otherSFU)))
		synctest.Wait()
		c := h.sfu.conn(callengine.RoomID(string(roomA) + "|" + otherSFU))
		if c == nil {
			t.Fatal("no connection to alice's SFU")
		}
		c.presence(alice.Identity(), true)
		synctest.Wait()
		time.Sleep(time.Minute) // past the presence grace: she is seen at her SFU
		synctest.Wait()
		if st := h.r.Status(); st.Phase != callengine.PhaseInCall {
			t.Fatalf("status %+v, want in call", st)
		}
		h.r.Hangup()
		synctest.Wait()
		if !c.isClosed() {
			t.Error("remote SFU connection left open")
		}
	})
}
