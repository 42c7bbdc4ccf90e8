package device

import (
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/doorbell/intercom/callengine"
)

// FuzzDoorPolicy drives the policy with random sequences of requests,
// rings, calls, ring notices, syncs that show the homeserver's clock,
// jumps of the homeserver's and the board's clocks, restarts (through the
// policy's JSON memory) and floods of future-dated and unauthorised
// commands, the way the Door calls it. It keeps its own record of what
// happened, in real time, and checks against it:
//
//   - the relay never pulses for anyone but an authorised sender, for an
//     event of that sender delivered before (in this run or an earlier
//     one), outside a call or the ring window (a reaction:
//     outside the window of its notice's ring or of the call that
//     answered it), within one pulse of the last pulse, for a negative
//     age, for an age beyond MaxAge or the time since start, for a
//     command without a usable age while the homeserver's clock is not
//     known, or for a timestamp that, by the homeserver's clock as the
//     policy knows it, is before the start, more than MaxAge old or more
//     than a minute ahead; while that clock never jumped, the relay never
//     pulses for a command that was in truth sent before the run started
//     or more than MaxAge ago, whatever the board's clock says;
//   - a stranger's request never changes what the policy remembers or
//     asks the door to save;
//   - the memory never keeps a time more than a minute ahead of the
//     homeserver's clock once that is known;
//   - and an authorised, fresh, new command during a call or in the ring
//     window, with a usable age or a known clock, does open the door
//     (unless the homeserver's clock ever went backwards, which may hold
//     commands up for as long as it went back).
func FuzzDoorPolicy(f *testing.F) {
	for _, seed := range doorFuzzSeeds {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, data []byte) { runDoorFuzz(t, data) })
}

// runDoorFuzz plays one input; the first byte picks only_during_call.
func runDoorFuzz(t *testing.T, data []byte) *doorFuzz {
	next := func() byte {
		if len(data) == 0 {
			return 0
		}
		b := data[0]
		data = data[1:]
		return b
	}
	fz := newDoorFuzz(t, next()&1 != 0)
	for len(data) > 0 {
		fz.step(next)
	}
	return fz
}

// Operations of an input, for writing seeds: opTime, n advances the
// clock by n × 100 ms; opRequest is followed by five bytes (oneRequest).
const (
	opTime, opRestart, opNotice, opCall, opRing, opSync, opServerJump, opFlood, opRequest = 0, 1, 2, 3, 4, 5, 6, 7, 8
)

// Request modes (oneRequest's fourth byte): an honest timestamp with no
// age, or with the true age, and without the sync's clock.
const (
	reqNoAge, reqTrueAge, reqNoServerTime = 0x00, 0x04, 0x40
)

// doorFuzzSeeds are FuzzDoorPolicy's seeds; TestDoorFuzzSeeds checks
// what the first ones open.
var doorFuzzSeeds = [][]byte{
	// A day at the door: the sync shows the homeserver's clock; a ring and
	// its notice; "!open" with its true age; 🔑 on the notice (no age);
	// the board restarts three years ahead; a sync, a ring, "!open".
	// Three openings.
	{0, opTime, 50, opSync, opRing, opNotice, 0, opTime, 10,
		opRequest, 1, 0, 2, reqTrueAge, 0, opTime, 30,
		opRequest, 0, 0x20, 2, reqNoAge, 0,
		opRestart, 3, opTime, 50, opSync, opRing, opTime, 10,
		opRequest, 3, 0, 2, reqNoAge, 0},
	// Floods of future-dated and unauthorised commands between a ring and
	// a fresh "!open", then the board comes back an hour behind and the
	// backlog arrives without an age before any sync, then after one.
	// One opening.
	{0, opTime, 50, opSync, opRing, opFlood, 63, opFlood, 40, opTime, 10,
		opRequest, 4, 0, 2, reqNoAge, 0,
		opRestart, 1, opRing, opCall, 0,
		opRequest, 5, 0, 40, reqNoAge | reqNoServerTime, 0,
		opRequest, 6, 0, 40, reqNoAge, 0},
	// The homeserver's clock jumps ahead by two years and is put right,
	// with restarts between: the saved future time must not hold the door.
	{0, opTime, 50, opSync, opServerJump, 5, opSync, opRestart, 0, opServerJump, 0,
		opRestart, 0, opTime, 50, opSync, opCall, 0, opTime, 10,
		opRequest, 7, 0, 2, reqNoAge, 0},
	// This morning's ring notice, a 🔑 on it during the next visitor's
	// ring window (issue 19, finding 1), then on that visitor's notice.
	// One opening.
	{0, opTime, 50, opSync, opRing, opNotice, 0,
		opTime, 255, opTime, 255, opTime, 255, opTime, 255, opTime, 255, opTime, 255, opTime, 255, opTime, 255, opTime, 255, opTime, 255,
		opSync, opRing, opNotice, 1, opTime, 10,
		opRequest, 10, 0x20, 2, reqNoAge, 0, opTime, 10,
		opRequest, 6, 0x20, 2, reqNoAge, 0},
	{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10},
	{0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0},
	[]byte("\x00\x10\x00\x01\x05\x00\x00\x06\x00\x10\x00\x01\x05"),
}

// TestDoorFuzzSeeds: the fuzzer's model agrees with the policy on its
// seeds and they open the door as often as their comments say, so its
// "must open" checks are not vacuous.
func TestDoorFuzzSeeds(t *testing.T) {
	for i, want := range []int{3, 1, 1, 1} {
		if fz := runDoorFuzz(t, doorFuzzSeeds[i]); fz.opens != want {
			t.Errorf("seed %d opened %d times, want %d", i, fz.opens, want)
		}
	}
}

// Clock jumps the fuzzer picks from: the board's clock at a restart (no
// RTC: behind, or years ahead after a bad NTP answer), the homeserver's
// when an operator corrects it.
var (
	boardJumps  = []time.Duration{0, -time.Hour, -5 * time.Minute, 3 * 365 * 24 * time.Hour, -10 * 365 * 24 * time.Hour, 90 * time.Second, -90 * time.Second, 24 * time.Hour}
	serverJumps = []time.Duration{0, 30 * time.Second, -30 * time.Second, 10 * time.Minute, -10 * time.Minute, 2 * 365 * 24 * time.Hour}
)

// doorFuzz is FuzzDoorPolicy's record of the world, in real time.
type doorFuzz struct {
	t   *testing.T
	cfg DoorConfig
	p   *DoorPolicy

	real      time.Time     // the true time
	boardSkew time.Duration // board clock = real + boardSkew (changes at restarts)
	srvSkew   time.Duration // homeserver clock = real + srvSkew
	srvBack   bool          // the homeserver's clock ever went backwards

	startReal  time.Time
	anchored   bool
	anchorSkew time.Duration // srvSkew then

	inCall    bool
	callSince time.Time            // real
	lastRing  time.Time            // real; zero: none this run
	notices   map[string]time.Time // this run's notices → their ring (real)
	lastOpen  time.Time            // real; zero: none this run

	// deliveredAlice holds alice's events handed to any run, by event
	// (ID, sender and timestamp: a redelivery is the same event; the
	// fuzzer also reuses IDs for different events, which Matrix never
	// does, since an event ID names one event of one sender).
	deliveredAlice map[string]bool
	aliceIDs       map[string]bool // IDs of those events
	deliveredRun   map[string]bool // IDs of anyone's commands handed to this run
	strangerSeq    int
	opens          int
}

func newDoorFuzz(t *testing.T, onlyDuringCall bool) *doorFuzz {
	fz := &doorFuzz{
		t:              t,
		cfg:            DoorConfig{Authorized: []callengine.UserID{alice}, Pulse: 2 * time.Second, ReplyUnauthorized: true, OnlyDuringCall: onlyDuringCall},
		real:           t0,
		deliveredAlice: map[string]bool{},
		aliceIDs:       map[string]bool{},
	}
	fz.startRun(DoorMemory{})
	return fz
}

func (fz *doorFuzz) board() time.Time      { return fz.real.Add(fz.boardSkew) }
func (fz *doorFuzz) server() time.Time     { return fz.real.Add(fz.srvSkew) }
func (fz *doorFuzz) window() time.Duration { return fz.p.Config().Window }

func (fz *doorFuzz) startRun(mem DoorMemory) {
	fz.startReal = fz.real
	fz.p = NewDoorPolicy(fz.cfg, fz.board(), mem)
	fz.anchored, fz.inCall = false, false
	fz.callSince, fz.lastRing, fz.lastOpen = time.Time{}, time.Time{}, time.Time{}
	fz.notices = map[string]time.Time{}
	fz.deliveredRun = map[string]bool{}
}

// sync is a /sync response showing the homeserver's clock (the Door
// calls ServerTime for every request that carries it).
func (fz *doorFuzz) sync() {
	fz.p.ServerTime(fz.board(), fz.server())
	fz.anchored, fz.anchorSkew = true, fz.srvSkew
}

// srvEst is the homeserver's clock at real time at, as the policy
// estimates it from its last reading (which was right when taken).
func (fz *doorFuzz) srvEst(at time.Time) time.Time { return at.Add(fz.anchorSkew) }

func (fz *doorFuzz) step(next func() byte) {
	t := fz.t
	switch op := next() % 12; op {
	case 0: // time passes
		fz.real = fz.real.Add(time.Duration(next()) * 100 * time.Millisecond)
	case 1: // restart: the memory goes through JSON, the board's clock may jump
		mem := fz.memory()
		raw, err := json.Marshal(mem)
		if err != nil {
			t.Fatal(err)
		}
		var back DoorMemory
		if err := json.Unmarshal(raw, &back); err != nil {
			t.Fatal(err)
		}
		fz.boardSkew = boardJumps[int(next())%len(boardJumps)]
		fz.startRun(back)
	case 2:
		id := fmt.Sprintf("$n%d", next()%4)
		fz.p.NoticeSent(id)
		if _, ok := fz.notices[id]; !ok {
			fz.notices[id] = fz.lastRing
		}
	case 3:
		in := next()%2 == 0
		fz.p.CallChanged(fz.board(), in)
		if in && !fz.inCall {
			fz.callSince = fz.real
		}
		fz.inCall = in
	case 4:
		fz.p.Rang(fz.board())
		fz.lastRing = fz.real
	case 5:
		fz.sync()
	case 6: // an operator corrects the homeserver's clock
		skew := serverJumps[int(next())%len(serverJumps)]
		if skew < fz.srvSkew {
			fz.srvBack = true
		}
		fz.srvSkew = skew
	case 7: // a flood of future-dated commands: strangers', and some from alice's server
		n := int(next()%64) + 1
		for i := range n {
			ts := fz.server().Add(time.Minute + time.Duration(i+1)*time.Hour)
			if i%4 == 3 {
				fz.request(DoorRequest{EventID: fmt.Sprintf("$f%d", i%16), Sender: alice, Text: "!open", Timestamp: ts, ServerNow: fz.server()}, false, 0)
				continue
			}
			fz.strangerSeq++
			fz.request(DoorRequest{EventID: fmt.Sprintf("$m%d", fz.strangerSeq), Sender: mallory, Text: "!open", Timestamp: ts, ServerNow: fz.server()}, false, 0)
		}
	default: // one request
		fz.oneRequest(next)
	}
}

var fuzzUsers = []callengine.UserID{alice, mallory, "", "@alice:other.test"}

func (fz *doorFuzz) oneRequest(next func() byte) {
	b := [5]byte{next(), next(), next(), next(), next()}
	r := DoorRequest{EventID: fmt.Sprintf("$e%d", b[0]%32), Sender: fuzzUsers[int(b[1])%len(fuzzUsers)]}
	if b[1]&0x20 != 0 {
		r.Reaction, r.Key, r.Target = true, "🔑", fmt.Sprintf("$n%d", b[0]%5)
	} else {
		r.Text = "!open"
	}
	delay := time.Duration(b[2]) * 250 * time.Millisecond // 0 to 63.75 s
	honest := false
	switch b[3] % 4 {
	case 0, 1: // sent delay ago, stamped by the homeserver's clock then
		r.Timestamp, honest = fz.server().Add(-delay), true
	case 2: // any timestamp, up to a few weeks either way
		r.Timestamp = fz.server().Add(time.Duration(int8(b[2])) * time.Duration(b[4]) * time.Minute)
	case 3: // none
	}
	switch b[3] / 4 % 4 {
	case 0: // no unsigned.age (Dendrite)
	case 1:
		r.Age = delay
	case 2:
		r.Age = -time.Duration(b[4]+1) * 100 * time.Millisecond
	case 3:
		r.Age = time.Duration(b[4]) * 500 * time.Millisecond
	}
	if b[3]&0x40 == 0 { // most requests come with the sync's clock
		r.ServerNow = fz.server()
	}
	fz.request(r, honest, delay)
}

// request hands r to the policy as the Door would and checks the decision.
// honest says r.Timestamp is the homeserver's true clock delay ago.
func (fz *doorFuzz) request(r DoorRequest, honest bool, delay time.Duration) {
	t := fz.t
	if !r.ServerNow.IsZero() {
		fz.sync()
	}
	seenBefore, floorBefore := len(fz.p.order), fz.p.floor
	event := fmt.Sprintf("%s|%s|%d", r.EventID, r.Sender, r.Timestamp.UnixNano())
	replayed := fz.deliveredAlice[event]
	mustOpen := fz.mustOpen(r, honest, delay) && !fz.aliceIDs[r.EventID] && !fz.deliveredRun[r.EventID]
	d := fz.p.Decide(fz.board(), r)
	if d.Verdict != VerdictNotCommand && d.Verdict != VerdictUnknownTarget {
		fz.deliveredRun[r.EventID] = true
		if r.Sender == alice {
			fz.deliveredAlice[event], fz.aliceIDs[r.EventID] = true, true
		}
	}
	if r.Sender != alice {
		if d.Changed || len(fz.p.order) != seenBefore || !fz.p.floor.Equal(floorBefore) {
			t.Fatalf("a stranger's request (%s) changed the memory: %+v", r.Sender, d)
		}
	}
	if d.Verdict != VerdictOpen {
		if d.Pulse != 0 {
			t.Fatalf("pulse %v with verdict %s", d.Pulse, d.Verdict)
		}
		if mustOpen {
			t.Fatalf("a fresh authorised command in the window was refused: %s (%s); request %+v", d.Verdict, d.Why, r)
		}
		return
	}
	fz.checkOpen(r, honest, delay, replayed, d)
	fz.lastOpen = fz.real
	fz.opens++
}

// checkOpen fails unless opening for r was right.
func (fz *doorFuzz) checkOpen(r DoorRequest, honest bool, delay time.Duration, replayed bool, d Decision) {
	t := fz.t
	maxAge := fz.p.Config().MaxAge
	switch {
	case r.Sender != alice:
		t.Fatalf("opened for unauthorised %q", r.Sender)
	case replayed:
		t.Fatalf("opened for an event delivered before: %s", r.EventID)
	case !fz.inWindow(r):
		t.Fatalf("opened outside the window: %+v (in call %v since %v, ring %v, now %v)", r, fz.inCall, fz.callSince, fz.lastRing, fz.real)
	case !fz.lastOpen.IsZero() && fz.real.Sub(fz.lastOpen) < fz.cfg.Pulse:
		t.Fatalf("opened %v after the last pulse", fz.real.Sub(fz.lastOpen))
	case d.Pulse <= 0 || d.Pulse > 30*time.Second:
		t.Fatalf("pulse %v", d.Pulse)
	case r.Timestamp.IsZero() || r.Age < 0:
		t.Fatalf("opened for timestamp %v, age %v", r.Timestamp, r.Age)
	case r.Age > 0 && (r.Age > maxAge || r.Age > fz.real.Sub(fz.startReal)):
		t.Fatalf("opened for an age of %v, %v after the start", r.Age, fz.real.Sub(fz.startReal))
	case !fz.anchored && r.Age == 0:
		t.Fatalf("opened without an age or the homeserver's clock")
	}
	if fz.anchored {
		srv, start := fz.srvEst(fz.real), fz.srvEst(fz.startReal)
		switch {
		case r.Timestamp.After(srv.Add(maxAhead)):
			t.Fatalf("opened for a timestamp %v ahead of the homeserver's clock", r.Timestamp.Sub(srv))
		case r.Timestamp.Before(start):
			t.Fatalf("opened for a timestamp %v before the start", start.Sub(r.Timestamp))
		case r.Age == 0 && srv.Sub(r.Timestamp) > maxAge:
			t.Fatalf("opened for a timestamp %v old", srv.Sub(r.Timestamp))
		}
	}
	// In truth, when the homeserver's clock never jumped: an honest
	// event (its age, if any, the true one) was sent during this run and
	// less than MaxAge ago, whatever the board's clock said.
	if honest && fz.srvSkew == 0 && !fz.srvBack && fz.anchorSkew == 0 && (r.Age == 0 || r.Age == delay) {
		sent := fz.real.Add(-delay)
		if sent.Before(fz.startReal) || delay > maxAge {
			t.Fatalf("opened for a command sent %v ago, %v before the start", delay, fz.startReal.Sub(sent))
		}
	}
}

// inWindow is the window rule in real time.
func (fz *doorFuzz) inWindow(r DoorRequest) bool {
	w := fz.window()
	ringOpen := func(ring time.Time) bool {
		return !fz.cfg.OnlyDuringCall && !ring.IsZero() && fz.real.Sub(ring) <= w
	}
	if !r.Reaction {
		return fz.inCall || ringOpen(fz.lastRing)
	}
	ring, ok := fz.notices[r.Target]
	if !ok || ring.IsZero() {
		return false
	}
	return ringOpen(ring) || fz.inCall && !fz.callSince.Before(ring) && fz.callSince.Sub(ring) <= max(w, ringAnswer)
}

// mustOpen says whether r, judged now, must open the door (the caller
// adds that its ID is new): an authorised sender's honest command, sent
// during this run and well inside MaxAge, in the window with a margin,
// past the rate limit, with a usable age or a current reading of the
// homeserver's clock, which never went backwards.
func (fz *doorFuzz) mustOpen(r DoorRequest, honest bool, delay time.Duration) bool {
	const margin = time.Second
	if r.Sender != alice || !honest || fz.srvBack || delay > 50*time.Second {
		return false
	}
	if fz.real.Add(-delay).Before(fz.startReal.Add(margin)) {
		return false
	}
	switch {
	case r.Age < 0 || (r.Age > 0 && r.Age != delay):
		return false
	case r.Age == 0 && !fz.anchored:
		return false
	case fz.anchored && fz.anchorSkew != fz.srvSkew:
		return false // the policy's reading is out of date
	}
	if !fz.lastOpen.IsZero() && fz.real.Sub(fz.lastOpen) < fz.cfg.Pulse {
		return false
	}
	w := fz.window() - margin
	ringOpen := func(ring time.Time) bool {
		return !fz.cfg.OnlyDuringCall && !ring.IsZero() && fz.real.Sub(ring) <= w
	}
	if !r.Reaction {
		return fz.inCall || ringOpen(fz.lastRing)
	}
	ring, ok := fz.notices[r.Target]
	if !ok || ring.IsZero() {
		return false
	}
	return ringOpen(ring) || fz.inCall && !fz.callSince.Before(ring) && fz.callSince.Sub(ring) <= max(fz.window(), ringAnswer)-margin
}

// memory takes the policy's memory now and checks that, with the
// homeserver's clock known, it holds no time beyond it.
func (fz *doorFuzz) memory() DoorMemory {
	mem := fz.p.Memory(fz.board())
	if fz.anchored {
		limit := fz.srvEst(fz.real).Add(maxAhead)
		if mem.NotBefore.After(limit) || mem.Floor.After(limit) {
			fz.t.Fatalf("memory beyond the homeserver's clock %v: not_before %v, floor %v", limit, mem.NotBefore, mem.Floor)
		}
	}
	return mem
}
