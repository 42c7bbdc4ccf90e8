package device

import (
	"slices"
	"testing"
	"time"

	"github.com/doorbell/intercom/callengine"
)

// A reload changes who may open and for how long, and nothing the policy
// remembers: an event handled before stays handled, and the rate limit
// still counts from the last pulse.
func TestDoorPolicyReconfigureKeepsMemory(t *testing.T) {
	p := NewDoorPolicy(testDoorConfig(), t0, DoorMemory{})
	anchor(p, t0)
	p.Rang(t0)
	at := func(d time.Duration) time.Time { return t0.Add(d) }
	if v := p.Decide(at(time.Second), openReq("$m", mallory, at(time.Second))).Verdict; v != VerdictUnauthorized {
		t.Fatalf("mallory before the reload: %s", v)
	}
	if d := p.Decide(at(2*time.Second), openReq("$a", alice, at(2*time.Second))); d.Verdict != VerdictOpen || d.Pulse != DefaultPulse {
		t.Fatalf("alice before the reload: %+v", d)
	}

	p.Reconfigure(DoorConfig{Authorized: []callengine.UserID{alice, mallory}, Pulse: 5 * time.Second})
	if c := p.Config(); c.Pulse != 5*time.Second || len(c.Authorized) != 2 || c.Commands[0] != DefaultCommand {
		t.Fatalf("config after the reload %+v", c)
	}
	steps := []struct {
		at   time.Duration
		req  DoorRequest
		want Verdict
	}{
		// Refused before the reload: still refused (handled once).
		{3 * time.Second, openReq("$m", mallory, at(time.Second)), VerdictDuplicate},
		{3 * time.Second, openReq("$a", alice, at(2*time.Second)), VerdictDuplicate},
		// The new pulse is the new rate limit, from the last pulse at 2 s.
		{6 * time.Second, openReq("$m2", mallory, at(6*time.Second)), VerdictRateLimited},
		{8 * time.Second, openReq("$m3", mallory, at(8*time.Second)), VerdictOpen},
	}
	for _, s := range steps {
		d := p.Decide(at(s.at), s.req)
		if d.Verdict != s.want {
			t.Fatalf("%s at %v: %s (%s), want %s", s.req.EventID, s.at, d.Verdict, d.Why, s.want)
		}
		if d.Verdict == VerdictOpen && d.Pulse != 5*time.Second {
			t.Fatalf("pulse %v after the reload, want 5s", d.Pulse)
		}
	}
	// "$m" was a stranger's when it came: kept apart, never saved.
	if m := p.Memory(at(9 * time.Second)); len(m.Seen) != 3 || !m.NotBefore.Equal(at(9*time.Second)) {
		t.Fatalf("memory after the reload %+v", m)
	}
}

// Door.SetConfig goes through the door's inbox: requests queued before it
// are judged under the old configuration, those after under the new.
func TestDoorSetConfig(t *testing.T) {
	relay := newRecordingRelay(t)
	cfg := testDoorConfig()
	cfg.Pulse = 100 * time.Millisecond
	door, _ := runDoor(t, DoorOptions{Policy: cfg, Relay: relay, Messenger: &fakeMessenger{}})
	door.rang()

	now := time.Now()
	door.Handle(serverReq("$m1", mallory, now, now), now) // old config: refused
	next := cfg
	next.Authorized = []callengine.UserID{mallory}
	next.Pulse = 150 * time.Millisecond
	door.SetConfig(next)
	door.Handle(serverReq("$m1", mallory, now, now), now) // redelivered: handled already
	door.Handle(serverReq("$m2", mallory, now, now), now) // new config: opens for 150 ms
	waitFor(t, "one pulse", func() bool { return relay.count() == 1 })
	waitFor(t, "relay off", func() bool { return !relay.Energised() })
	waitFor(t, "config applied", func() bool { return door.Config().Pulse == 150*time.Millisecond })
	if c := door.Config(); !slices.Equal(c.Authorized, []callengine.UserID{mallory}) {
		t.Fatalf("Config() after SetConfig: %+v", c)
	}
	relay.mu.Lock()
	pulses := slices.Clone(relay.pulses)
	relay.mu.Unlock()
	if !slices.Equal(pulses, []time.Duration{150 * time.Millisecond}) {
		t.Fatalf("pulses %v, want one of 150ms", pulses)
	}
	if st := door.Status(); st.Opens != 1 || st.Refused != 2 {
		t.Fatalf("status %+v, want 1 open and 2 refused", st)
	}
	// Alice is no longer authorised.
	later := time.Now().Add(time.Second)
	door.Handle(serverReq("$a", alice, later, later), later)
	waitFor(t, "alice refused", func() bool { return door.Status().Refused == 3 })
	if relay.count() != 1 {
		t.Fatal("alice opened the door after losing her authorisation")
	}
}
