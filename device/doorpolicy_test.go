package device

import (
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/doorbell/intercom/callengine"
)

const (
	alice   = callengine.UserID("@alice:hs.test")
	mallory = callengine.UserID("@mallory:hs.test")
)

var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

func testDoorConfig() DoorConfig {
	return DoorConfig{Authorized: []callengine.UserID{alice}, ReplyUnauthorized: true}
}

func openReq(id string, sender callengine.UserID, ts time.Time) DoorRequest {
	return DoorRequest{EventID: id, Room: "!dm:hs.test", Sender: sender, Text: "!open", Timestamp: ts}
}

func TestDoorPolicyRules(t *testing.T) {
	type step struct {
		at   time.Duration // since t0 (the start)
		req  DoorRequest
		want Verdict
	}
	at := func(d time.Duration) time.Time { return t0.Add(d) }
	react := func(id, key, target string, ts time.Time) DoorRequest {
		return DoorRequest{EventID: id, Sender: alice, Reaction: true, Key: key, Target: target, Timestamp: ts}
	}
	tests := []struct {
		name   string
		cfg    func(*DoorConfig)
		setup  func(*DoorPolicy)
		server time.Duration // the homeserver's clock ahead of the board's
		steps  []step
	}{
		{name: "authorised opens once per event ID", steps: []step{
			{1 * time.Second, openReq("$a", alice, at(time.Second)), VerdictOpen},
			{10 * time.Second, openReq("$a", alice, at(time.Second)), VerdictDuplicate},
		}},
		{name: "case and space in the command", steps: []step{
			{time.Second, DoorRequest{EventID: "$a", Sender: alice, Text: "  !OPEN \n", Timestamp: at(time.Second)}, VerdictOpen},
		}},
		{name: "other texts are no command", steps: []step{
			{time.Second, DoorRequest{EventID: "$a", Sender: alice, Text: "!open the door", Timestamp: at(time.Second)}, VerdictNotCommand},
			{time.Second, DoorRequest{EventID: "$b", Sender: alice, Text: "", Timestamp: at(time.Second)}, VerdictNotCommand},
		}},
		{name: "configured command list", cfg: func(c *DoorConfig) { c.Commands = []string{"Sesame", "!door"} }, steps: []step{
			{time.Second, openReq("$a", alice, at(time.Second)), VerdictNotCommand},
			{time.Second, DoorRequest{EventID: "$b", Sender: alice, Text: "sesame", Timestamp: at(time.Second)}, VerdictOpen},
		}},
		{name: "unauthorised never opens, even twice", steps: []step{
			{time.Second, openReq("$m", mallory, at(time.Second)), VerdictUnauthorized},
			{2 * time.Second, openReq("$m", mallory, at(time.Second)), VerdictDuplicate},
			{5 * time.Second, openReq("$m2", mallory, at(5*time.Second)), VerdictUnauthorized},
		}},
		{name: "sent before the start", steps: []step{
			{time.Second, openReq("$old", alice, at(-time.Millisecond)), VerdictStale},
		}},
		{name: "age says before the start though the clocks disagree", server: 10 * time.Second, steps: []step{
			// The homeserver's clock is 10 s ahead: its timestamp looks
			// fresh, but the event is 5 s old and the intercom runs 2 s.
			{2 * time.Second, DoorRequest{EventID: "$skew", Sender: alice, Text: "!open", Timestamp: at(7 * time.Second), Age: 5 * time.Second}, VerdictStale},
			{3 * time.Second, DoorRequest{EventID: "$ok", Sender: alice, Text: "!open", Timestamp: at(12 * time.Second), Age: 100 * time.Millisecond}, VerdictOpen},
		}},
		{name: "older than MaxAge", steps: []step{
			{5 * time.Minute, openReq("$late", alice, at(time.Minute)), VerdictStale},
			{5 * time.Minute, DoorRequest{EventID: "$late2", Sender: alice, Text: "!open", Timestamp: at(4*time.Minute + 59*time.Second), Age: 2 * time.Minute}, VerdictStale},
		}},
		{name: "no timestamp, no event ID", steps: []step{
			{time.Second, DoorRequest{EventID: "$nots", Sender: alice, Text: "!open"}, VerdictStale},
			{time.Second, DoorRequest{Sender: alice, Text: "!open", Timestamp: at(time.Second)}, VerdictDuplicate},
		}},
		{name: "rate limit of one pulse per pulse length", steps: []step{
			{10 * time.Second, openReq("$1", alice, at(10*time.Second)), VerdictOpen},
			{12 * time.Second, openReq("$2", alice, at(12*time.Second)), VerdictRateLimited},
			{13 * time.Second, openReq("$3", alice, at(13*time.Second)), VerdictOpen},
			{14 * time.Second, openReq("$2", alice, at(12*time.Second)), VerdictDuplicate},
		}},
		{name: "reaction to a ring notice", setup: func(p *DoorPolicy) { p.Rang(t0); p.NoticeSent("$notice") }, steps: []step{
			{time.Second, react("$r1", "🔑️", "$notice", at(time.Second)), VerdictOpen},
			{time.Second, react("$r1", "🔑", "$notice", at(time.Second)), VerdictDuplicate},
			{5 * time.Second, react("$r2", "👍", "$notice", at(5*time.Second)), VerdictNotCommand},
			{5 * time.Second, react("$r3", "🔑", "$other", at(5*time.Second)), VerdictUnknownTarget},
		}},
		{name: "only during a call", cfg: func(c *DoorConfig) { c.OnlyDuringCall = true }, setup: func(p *DoorPolicy) { p.Rang(t0) }, steps: []step{
			{time.Second, openReq("$1", alice, at(time.Second)), VerdictOutsideWindow},
		}},
		{name: "during a call", cfg: func(c *DoorConfig) { c.OnlyDuringCall = true }, setup: func(p *DoorPolicy) { p.CallChanged(t0, true) }, steps: []step{
			{time.Second, openReq("$1", alice, at(time.Second)), VerdictOpen},
		}},
		{name: "window after a ring", cfg: func(c *DoorConfig) { c.Window = 2 * time.Minute }, setup: func(p *DoorPolicy) { p.Rang(t0) }, steps: []step{
			{time.Second, openReq("$1", alice, at(time.Second)), VerdictOpen},
			{2*time.Minute + time.Second, openReq("$2", alice, at(2*time.Minute+time.Second)), VerdictOutsideWindow},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := testDoorConfig()
			if tt.cfg != nil {
				tt.cfg(&cfg)
			}
			p := NewDoorPolicy(cfg, t0, DoorMemory{})
			anchor(p, t0, t0.Add(tt.server))
			if tt.setup != nil {
				tt.setup(p)
			} else {
				// A call is connected: the window is not what these
				// cases are about (doorwindow_test.go).
				p.CallChanged(t0, true)
			}
			for i, s := range tt.steps {
				d := p.Decide(t0.Add(s.at), s.req)
				if d.Verdict != s.want {
					t.Fatalf("step %d (%s): %s (%s), want %s", i, s.req.EventID, d.Verdict, d.Why, s.want)
				}
				if (d.Pulse > 0) != (d.Verdict == VerdictOpen) {
					t.Fatalf("step %d: pulse %v with verdict %s", i, d.Pulse, d.Verdict)
				}
			}
		})
	}
}

func TestDoorPolicyPulseCappedAndDefaults(t *testing.T) {
	p := NewDoorPolicy(DoorConfig{Pulse: time.Hour, Authorized: []callengine.UserID{alice}}, t0, DoorMemory{})
	anchor(p, t0)
	p.Rang(t0)
	d := p.Decide(t0.Add(time.Second), openReq("$a", alice, t0.Add(time.Second)))
	if d.Verdict != VerdictOpen || d.Pulse != 30*time.Second {
		t.Fatalf("%+v, want open for the 30 s ceiling", d)
	}
	c := NewDoorPolicy(DoorConfig{}, t0, DoorMemory{}).Config()
	if c.Pulse != 3*time.Second || c.Commands[0] != "!open" || c.ReactionKey != "🔑" || c.MaxAge != time.Minute ||
		c.Window != 3*time.Minute || c.OnlyDuringCall {
		t.Errorf("defaults %+v", c)
	}
}

func TestDoorPolicyRepliesRateLimited(t *testing.T) {
	p := NewDoorPolicy(testDoorConfig(), t0, DoorMemory{})
	anchor(p, t0)
	if d := p.Decide(t0.Add(time.Second), openReq("$1", mallory, t0.Add(time.Second))); d.Reply == "" {
		t.Errorf("first refusal without a reply: %+v", d)
	}
	if d := p.Decide(t0.Add(2*time.Second), openReq("$2", mallory, t0.Add(2*time.Second))); d.Reply != "" {
		t.Errorf("second refusal within a minute replied: %+v", d)
	}
	if d := p.Decide(t0.Add(62*time.Second), openReq("$3", mallory, t0.Add(62*time.Second))); d.Reply == "" {
		t.Errorf("refusal a minute later without a reply: %+v", d)
	}
	q := NewDoorPolicy(DoorConfig{Authorized: []callengine.UserID{alice}}, t0, DoorMemory{})
	anchor(q, t0)
	if d := q.Decide(t0.Add(time.Second), openReq("$1", mallory, t0.Add(time.Second))); d.Reply != "" {
		t.Errorf("reply without ReplyUnauthorized: %+v", d)
	}
}

// TestDoorPolicyRestart: what a run remembers keeps the next run from
// obeying its events again, even when the board's clock comes back behind.
func TestDoorPolicyRestart(t *testing.T) {
	p := NewDoorPolicy(testDoorConfig(), t0, DoorMemory{})
	anchor(p, t0)
	ts := t0.Add(time.Minute)
	p.Rang(ts)
	if d := p.Decide(ts, openReq("$a", alice, ts)); d.Verdict != VerdictOpen {
		t.Fatal(d)
	}
	raw, err := json.Marshal(p.Memory(t0.Add(2 * time.Minute)))
	if err != nil {
		t.Fatal(err)
	}
	var mem DoorMemory
	if err := json.Unmarshal(raw, &mem); err != nil {
		t.Fatal(err)
	}
	// The clock restarts an hour behind (no RTC): only the memory stops
	// "$a", and "$b" (sent while the old run was still up) is refused too.
	q := NewDoorPolicy(testDoorConfig(), t0.Add(-time.Hour), mem)
	now := t0.Add(-time.Hour + time.Second)
	if d := q.Decide(now, openReq("$a", alice, ts)); d.Verdict != VerdictDuplicate {
		t.Errorf("replayed event after restart: %+v", d)
	}
	if d := q.Decide(now, openReq("$b", alice, t0.Add(90*time.Second))); d.Verdict != VerdictStale {
		t.Errorf("event of the previous run after restart: %+v", d)
	}
	// Once a sync shows the homeserver's clock (right, unlike the
	// board's), its own events are judged by it: "$c", sent while the old
	// run was up, is still refused; a fresh one after a ring is obeyed.
	anchor(q, now, t0.Add(2*time.Minute+time.Second))
	if d := q.Decide(now, openReq("$c", alice, t0.Add(100*time.Second))); d.Verdict != VerdictStale {
		t.Errorf("event of the previous run, server time known: %+v", d)
	}
	q.Rang(now)
	if d := q.Decide(now, openReq("$d", alice, t0.Add(2*time.Minute+time.Second))); d.Verdict != VerdictOpen {
		t.Errorf("fresh event after restart, server time known: %+v", d)
	}
}

func TestDoorPolicyForgetsIntoTheFloor(t *testing.T) {
	p := NewDoorPolicy(testDoorConfig(), t0, DoorMemory{})
	anchor(p, t0)
	for i := range maxSeen + 10 {
		ts := t0.Add(time.Duration(i+1) * time.Millisecond)
		p.Decide(t0.Add(time.Second), openReq(fmt.Sprintf("$m%d", i), alice, ts))
	}
	if len(p.seen) != maxSeen {
		t.Fatalf("remembers %d IDs", len(p.seen))
	}
	// "$m0" is forgotten, but its timestamp is at the floor.
	if d := p.Decide(t0.Add(2*time.Second), openReq("$m0", alice, t0.Add(time.Millisecond))); d.Verdict != VerdictStale {
		t.Errorf("forgotten event obeyed: %+v", d)
	}
}

// TestDoorPolicyTrust: what end-to-end encryption says of a command
// decides before its age and the window do (issue 14).
func TestDoorPolicyTrust(t *testing.T) {
	plainRoom := callengine.Seal{}
	plainInEncrypted := callengine.Seal{RoomEncrypted: true}
	unknownDevice := callengine.Seal{RoomEncrypted: true, Encrypted: true}
	device := callengine.Seal{RoomEncrypted: true, Encrypted: true, Device: "PHONE", Trust: callengine.TrustDevice}
	crossSigned := callengine.Seal{RoomEncrypted: true, Encrypted: true, Device: "PHONE", Trust: callengine.TrustCrossSigned}
	tests := []struct {
		seal         callengine.Seal
		requireCross bool
		want         Verdict
		reply        bool
	}{
		{plainRoom, false, VerdictOpen, false},
		{plainInEncrypted, false, VerdictUntrusted, false},
		{unknownDevice, false, VerdictUntrusted, false},
		{device, false, VerdictOpen, false},
		{crossSigned, false, VerdictOpen, false},
		{plainRoom, true, VerdictUntrusted, true},
		{plainInEncrypted, true, VerdictUntrusted, false},
		{unknownDevice, true, VerdictUntrusted, false},
		{device, true, VerdictUntrusted, true},
		{crossSigned, true, VerdictOpen, false},
	}
	for i, tt := range tests {
		t.Run(fmt.Sprintf("%d", i), func(t *testing.T) {
			cfg := testDoorConfig()
			cfg.RequireCrossSigned = tt.requireCross
			p := NewDoorPolicy(cfg, t0, DoorMemory{})
			p.ServerTime(t0, t0)
			p.Rang(t0)
			req := openReq("$a", alice, t0.Add(time.Second))
			req.Seal = tt.seal
			d := p.Decide(t0.Add(time.Second), req)
			if d.Verdict != tt.want || (d.Reply != "") != tt.reply {
				t.Fatalf("seal %+v, require cross-signed %v: %s (%s), reply %q; want %s, reply %v",
					tt.seal, tt.requireCross, d.Verdict, d.Why, d.Reply, tt.want, tt.reply)
			}
			// Refused once is refused for good: the same event, even
			// from a trusted device, is a duplicate.
			// The same seal on a 🔑 reaction: a plaintext reaction in an
			// encrypted room is what Element Web sends, and passes
			// unless cross-signing is required.
			q := NewDoorPolicy(cfg, t0, DoorMemory{})
			q.ServerTime(t0, t0)
			q.Rang(t0)
			q.NoticeSent("$notice")
			react := DoorRequest{EventID: "$r", Sender: alice, Reaction: true, Key: "🔑", Target: "$notice", Timestamp: t0.Add(time.Second), Seal: tt.seal}
			wantReact := tt.want
			if tt.seal == plainInEncrypted && !tt.requireCross {
				wantReact = VerdictOpen
			}
			if got := q.Decide(t0.Add(time.Second), react); got.Verdict != wantReact {
				t.Errorf("reaction with seal %+v: %s (%s), want %s", tt.seal, got.Verdict, got.Why, wantReact)
			}
			if d.Verdict == VerdictUntrusted {
				req.Seal = crossSigned
				if again := p.Decide(t0.Add(2*time.Second), req); again.Verdict != VerdictDuplicate {
					t.Errorf("replayed with another seal: %s, want duplicate", again.Verdict)
				}
			}
		})
	}
}
