package rtc

import (
	"encoding/json"
	"slices"
	"testing"
	"time"

	"github.com/doorbell/intercom/callengine/group"
)

// TestHashedIdentity: the /get_token identity, against a value computed
// outside Go (python3: base64 of hashlib.sha256 over the compact JSON
// array, padding stripped).
func TestHashedIdentity(t *testing.T) {
	d := Device{User: "@alice:hs.test", DeviceID: "ALICEDEV"}
	if got, want := HashedIdentity(d, "@alice:hs.test:ALICEDEV"), "6N8eywphQ3p0cgjcjxyvhWULDQ5MlGJnP6wgpDDb7ac"; got != want {
		t.Fatalf("hashed identity %q, want %q", got, want)
	}
	// Without a membershipID the member ID is "<user>:<device>", as js-sdk
	// reads session memberships.
	if got := Identities(d, ""); !slices.Equal(got, []string{"@alice:hs.test:ALICEDEV", "6N8eywphQ3p0cgjcjxyvhWULDQ5MlGJnP6wgpDDb7ac"}) {
		t.Fatalf("identities %q", got)
	}
	if got := Identities(d, "custom"); got[1] == Identities(d, "")[1] {
		t.Fatal("a custom member ID gives the same hash")
	}
}

func TestMemberID(t *testing.T) {
	for content, want := range map[string]string{
		`{"membershipID":"@a:x:D"}`: "@a:x:D",
		`{"device_id":"D"}`:         "",
		`{"membershipID":5}`:        "",
		`[]`:                        "",
		`not json`:                  "",
	} {
		if got := MemberID(group.MemberEvent{Content: []byte(content)}); got != want {
			t.Errorf("MemberID(%s) = %q, want %q", content, got, want)
		}
	}
}

// joinEventWithID is d's membership naming memberID as membershipID.
func joinEventWithID(d Device, memberID string, at time.Time) group.MemberEvent {
	ev := joinEvent(d, at)
	var c map[string]any
	_ = json.Unmarshal(ev.Content, &c)
	c["membershipID"] = memberID
	ev.Content, _ = json.Marshal(c)
	return ev
}

// TestPresenceHashedIdentity: a resident who got their token through
// /get_token is at the SFU under the hash of user, device and the member
// ID of their membership; that counts as present, before or after the
// membership arrives, and leaving under it starts the grace timer.
func TestPresenceHashedIdentity(t *testing.T) {
	for _, tc := range []struct {
		name     string
		memberID string // membershipID in alice's event; "" for none
		first    bool   // at the SFU before the membership is seen
	}{
		{"default member ID", "", false},
		{"js-sdk membershipID", alice.Identity(), false},
		{"custom member ID", "a3f1-uuid", false},
		{"at the SFU first", alice.Identity(), true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := newMachine()
			ringAndNotify(t, m)
			hashed := HashedIdentity(alice, orDefault(tc.memberID, alice.Identity()))
			if tc.first {
				m.Step(t0.Add(time.Second), ParticipantChanged{Room: roomA, Identity: hashed, Present: true})
			}
			ev := joinEvent(alice, t0.Add(2*time.Second))
			if tc.memberID != "" {
				ev = joinEventWithID(alice, tc.memberID, t0.Add(2*time.Second))
			}
			effs := m.Step(t0.Add(2*time.Second), MemberChanged{Room: roomA, Event: ev})
			if len(find[Answered](effs)) != 1 {
				t.Fatalf("no answer: %v", effs)
			}
			started := slices.ContainsFunc(find[StartTimer](effs), func(s StartTimer) bool { return s.ID.Kind == TimerPresence })
			if started == tc.first {
				t.Fatalf("presence timer started=%v with alice at the SFU beforehand=%v: %v", started, tc.first, effs)
			}
			if !tc.first {
				effs = m.Step(t0.Add(3*time.Second), ParticipantChanged{Room: roomA, Identity: hashed, Present: true})
				if s := find[StopTimer](effs); len(s) != 1 || s[0].ID.Kind != TimerPresence {
					t.Fatalf("hashed identity not taken as alice's presence: %v", effs)
				}
			}
			effs = m.Step(t0.Add(time.Minute), ParticipantChanged{Room: roomA, Identity: hashed, Present: false})
			if s := find[StartTimer](effs); len(s) != 1 || s[0].ID.Kind != TimerPresence {
				t.Fatalf("leaving the SFU starts no grace timer: %v", effs)
			}
			effs = m.Step(t0.Add(time.Minute+20*time.Second), TimerFired{ID: TimerID{Kind: TimerPresence, Room: roomA}})
			if e := find[Ended](effs); len(e) != 1 || e[0].Reason != ReasonResidentLeft {
				t.Fatalf("call not ended after the grace: %v", effs)
			}
		})
	}
}

// TestPresenceOtherIdentity: someone else's hash, or alice's under another
// member ID than her membership names, is not alice.
func TestPresenceOtherIdentity(t *testing.T) {
	m := newMachine()
	ringAndNotify(t, m)
	m.Step(t0.Add(time.Second), MemberChanged{Room: roomA, Event: joinEvent(alice, t0.Add(time.Second))})
	for _, id := range []string{HashedIdentity(bob, bob.Identity()), HashedIdentity(alice, "random-uuid")} {
		effs := m.Step(t0.Add(2*time.Second), ParticipantChanged{Room: roomA, Identity: id, Present: true})
		if len(find[StopTimer](effs)) != 0 {
			t.Fatalf("%s taken as alice: %v", id, effs)
		}
	}
}

// TestRingWaitsForTransport: without a known transport a ring is
// ignored (a membership naming no JWT service is one nobody can join);
// once TransportChanged names one, memberships advertise it.
func TestRingWaitsForTransport(t *testing.T) {
	m := New(DefaultConfig(self, ""))
	effs := m.Step(t0, RingRequested{Targets: targets()})
	if len(find[PublishMembership](effs)) != 0 || m.Phase() != PhaseIdle || len(find[Ignored](effs)) != 1 {
		t.Fatalf("rang without a transport: %v", effs)
	}
	const url = "https://hs.test/livekit/jwt"
	m.Step(t0, TransportChanged{ServiceURL: url})
	effs = m.Step(t0, RingRequested{Targets: targets()})
	p := find[PublishMembership](effs)
	if len(p) != 2 || p[0].Content.FociPreferred[0].ServiceURL != url {
		t.Fatalf("memberships %+v", p)
	}
}

func orDefault(a, b string) string {
	if a != "" {
		return a
	}
	return b
}
