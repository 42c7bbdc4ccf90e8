package device

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/doorbell/intercom/callengine"
	"github.com/doorbell/intercom/gpio"
)

// fakeCaller stands in for the call engine: a ring moves it to ringing and
// publishes the status like the engine does.
type fakeCaller struct {
	mu     sync.Mutex
	status callengine.Status
	rings  [][]callengine.Resident
	subs   []chan callengine.Status
}

func (f *fakeCaller) set(p callengine.Phase) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.status.Phase = p
	for _, ch := range f.subs {
		ch <- f.status
	}
}

func (f *fakeCaller) Ring(_ context.Context, r []callengine.Resident) error {
	f.mu.Lock()
	busy := f.status.Phase != callengine.PhaseIdle
	if !busy {
		f.rings = append(f.rings, r)
	}
	f.mu.Unlock()
	if busy {
		return callengine.ErrBusy
	}
	f.set(callengine.PhaseRinging)
	return nil
}
func (f *fakeCaller) Hangup() { f.set(callengine.PhaseIdle) }
func (f *fakeCaller) Status() callengine.Status {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.status
}
func (f *fakeCaller) Subscribe() (<-chan callengine.Status, func()) {
	ch := make(chan callengine.Status, 16)
	f.mu.Lock()
	f.subs = append(f.subs, ch)
	f.mu.Unlock()
	return ch, func() {}
}

type fakeSync struct{ healthy atomic.Bool }

func (f *fakeSync) Healthy() bool { return f.healthy.Load() }
func (f *fakeSync) Report() any   { return map[string]bool{"syncing": f.healthy.Load()} }

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestPressRingsAndAPI(t *testing.T) {
	caller := &fakeCaller{status: callengine.Status{Phase: callengine.PhaseIdle}}
	ringerPin, relayPin := gpio.SimPin("RINGER"), gpio.SimPin("RELAY")
	ringer, err := gpio.NewRinger(ringerPin, gpio.ActiveHigh, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	relay, err := gpio.NewRelay(relayPin, gpio.ActiveHigh)
	if err != nil {
		t.Fatal(err)
	}
	sync := &fakeSync{}
	residents := []callengine.Resident{{User: "@alice:test", Room: "!a:test"}}
	d := New(Config{Caller: caller, Ringer: ringer, Relay: relay, Sync: sync, Residents: func() []callengine.Resident { return residents }})
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	go ringer.Run(ctx)
	done := make(chan error)
	go func() { done <- d.Run(ctx) }()
	srv := httptest.NewServer(d.Handler())
	defer srv.Close()

	resp, err := http.Get(srv.URL + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("healthz while not syncing: %d", resp.StatusCode)
	}
	sync.healthy.Store(true)

	events, err := http.Get(srv.URL + "/api/events")
	if err != nil {
		t.Fatal(err)
	}
	defer events.Body.Close()
	lines := bufio.NewScanner(events.Body)
	nextEvent := func() string {
		for lines.Scan() {
			if k, ok := strings.CutPrefix(lines.Text(), "event: "); ok {
				return k
			}
		}
		t.Fatal("event stream ended")
		return ""
	}
	if k := nextEvent(); k != "status" {
		t.Fatalf("first event %q", k)
	}

	resp, err = http.Post(srv.URL+"/api/ring", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("ring: %d", resp.StatusCode)
	}
	if k := nextEvent(); k != "press" {
		t.Fatalf("event %q, want press", k)
	}
	waitFor(t, "ringer", ringer.Ringing)
	if len(caller.rings) != 1 || caller.rings[0][0] != residents[0] {
		t.Fatalf("rings %+v", caller.rings)
	}

	resp, err = http.Get(srv.URL + "/api/status")
	if err != nil {
		t.Fatal(err)
	}
	var st map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if st["state"] != "ringing" || st["healthy"] != true || st["presses"] != float64(1) {
		t.Fatalf("status %v", st)
	}
	if r, _ := st["ringer"].(map[string]any); r["ringing"] != true {
		t.Fatalf("ringer status %v", st["ringer"])
	}

	caller.set(callengine.PhaseInCall)
	waitFor(t, "ringer off once answered", func() bool { return !ringer.Ringing() })
	resp, err = http.Post(srv.URL+"/api/hangup", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	waitFor(t, "idle", func() bool { return d.Status().State == callengine.PhaseIdle })
	cancel()
	<-done
	if ringerPin.Read() || relayPin.Read() {
		t.Fatal("outputs left on after Run")
	}
}

// failingCaller is a Caller whose rings reach nobody: each ends at once
// with its call's invite unsent (unknown_error), as with the homeserver
// away.
// Once reach is set, its rings ring (and show a call) like fakeCaller's.
type failingCaller struct {
	fakeCaller
	reach atomic.Bool
	n     int
}

func (f *failingCaller) Ring(ctx context.Context, r []callengine.Resident) error {
	f.mu.Lock()
	if f.status.Phase != callengine.PhaseIdle {
		f.mu.Unlock()
		return callengine.ErrBusy
	}
	f.rings = append(f.rings, r)
	f.n++
	id := callengine.CallID(fmt.Sprintf("c%d", f.n))
	if f.reach.Load() {
		f.status.Calls = []callengine.CallStatus{{CallID: id, State: callengine.LegRinging}}
		f.mu.Unlock()
		f.set(callengine.PhaseRinging)
		return nil
	}
	f.status.Calls = []callengine.CallStatus{{CallID: id, State: callengine.LegEnded, Reason: callengine.ReasonUnknownError}}
	f.mu.Unlock()
	f.set(callengine.PhaseIdle)
	return nil
}

// end ends the current ring's call with reason, in phase.
func (f *failingCaller) end(phase callengine.Phase, state callengine.LegState, reason string) {
	f.mu.Lock()
	calls := slices.Clone(f.status.Calls) // published statuses share the old slice
	for i := range calls {
		calls[i].State, calls[i].Reason = state, reason
	}
	f.status.Calls = calls
	f.mu.Unlock()
	f.set(phase)
}

func (f *failingCaller) ringCount() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.rings)
}

// recRinger records the bell.
type recRinger struct {
	mu      sync.Mutex
	ringing bool
}

func (r *recRinger) Set(on bool) { r.mu.Lock(); r.ringing = on; r.mu.Unlock() }
func (r *recRinger) Ringing() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.ringing
}
func (r *recRinger) Output() bool { return r.Ringing() }

// TestLocalRingWhenNobodyIsReached: a press whose ring reaches nobody
// rings the bell for LocalRing all the same; a hangup stops it; a ring
// that reached a resident leaves the bell to the ring.
func TestLocalRingWhenNobodyIsReached(t *testing.T) {
	caller := &failingCaller{fakeCaller: fakeCaller{status: callengine.Status{Phase: callengine.PhaseIdle}}}
	bell := &recRinger{}
	const localRing = 1500 * time.Millisecond
	d := New(Config{Caller: caller, Ringer: bell, LocalRing: localRing,
		Residents: func() []callengine.Resident { return []callengine.Resident{{User: "@a:t", Room: "!a:t"}} }})
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx) }()

	pressed := time.Now()
	d.Press("gpio")
	waitFor(t, "the bell on", bell.Ringing)
	time.Sleep(100 * time.Millisecond)
	if !bell.Ringing() {
		t.Fatal("the bell stopped with the failed ring, before LocalRing")
	}
	waitFor(t, "the bell off after LocalRing", func() bool { return !bell.Ringing() })
	if d := time.Since(pressed); d < localRing {
		t.Errorf("the bell rang %v, want LocalRing (%v)", d, localRing)
	}

	d.Press("gpio")
	waitFor(t, "the bell on again", bell.Ringing)
	d.Hangup()
	waitFor(t, "the bell off on hangup", func() bool { return !bell.Ringing() })

	// A ring that reached a resident (ended by a reject): the bell
	// follows the ring.
	caller.end(callengine.PhaseIdle, callengine.LegEnded, callengine.ReasonUserHangup)
	if unreached(caller.Status()) {
		t.Error("a rejected ring counted as reaching nobody")
	}
	cancel()
	<-done
}

// visitRig is an Intercom whose caller fails until told otherwise, with
// the homeserver's health, the bell and the visitor log recorded.
type visitRig struct {
	d      *Intercom
	caller *failingCaller
	sync   *fakeSync
	bell   *recRinger
	log    *recordingVisitors
	n      *Notices
}

func newVisitRig(t *testing.T, localRing time.Duration, attached bool) *visitRig {
	t.Helper()
	r := &visitRig{caller: &failingCaller{fakeCaller: fakeCaller{status: callengine.Status{Phase: callengine.PhaseIdle}}},
		sync: &fakeSync{}, bell: &recRinger{}, log: &recordingVisitors{}}
	r.n = NewNotices(NoticeOptions{Missed: true, Visitors: r.log, Location: time.UTC})
	cfg := Config{Ringer: r.bell, LocalRing: localRing, Sync: r.sync, Notices: r.n,
		Residents: func() []callengine.Resident { return []callengine.Resident{{User: "@a:t", Room: "!a:t"}} }}
	if attached {
		cfg.Caller = r.caller
	}
	r.d = New(cfg)
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- r.d.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done; r.n.Wait() })
	return r
}

// TestPressBeforeMatrix: with no Caller yet (the intercom has not reached
// the homeserver since it started) a press rings the bell for LocalRing
// and keeps the visitor as missed, for every room and not before the bell
// stops; the status says idle.
func TestPressBeforeMatrix(t *testing.T) {
	const localRing = 700 * time.Millisecond
	r := newVisitRig(t, localRing, false)
	pressed := time.Now()
	r.d.Press("gpio")
	waitFor(t, "the bell on", r.bell.Ringing)
	waitFor(t, "the visitor kept", func() bool { a, _ := r.log.snapshot(); return len(a) == 1 })
	adds, _ := r.log.snapshot()
	if !strings.Contains(adds[0], "could not reach you.|[]|") {
		t.Errorf("kept %q", adds)
	}
	if st := r.d.Status(); st.State != callengine.PhaseIdle || st.Presses != 1 {
		t.Errorf("status %+v", st)
	}
	waitFor(t, "the bell off", func() bool { return !r.bell.Ringing() })
	if d := time.Since(pressed); d < localRing {
		t.Errorf("the bell rang %v, want %v", d, localRing)
	}
	if _, c := r.log.snapshot(); len(c) != 0 {
		t.Errorf("withdrawn %v", c)
	}
}

// TestVisitorRungWhenMatrixArrives: a visitor who pressed before the
// Matrix side was up is rung once it is attached and the homeserver
// answers, while the bell still rings for them; the kept notice is
// withdrawn when the ring reaches a resident.
func TestVisitorRungWhenMatrixArrives(t *testing.T) {
	r := newVisitRig(t, 5*time.Second, false)
	r.d.Press("gpio")
	waitFor(t, "the visitor kept", func() bool { a, _ := r.log.snapshot(); return len(a) == 1 })
	r.caller.reach.Store(true)
	r.d.Attach(r.caller)
	time.Sleep(3 * visitRetryPoll)
	if r.caller.ringCount() != 0 {
		t.Fatal("rang before the homeserver answered /sync")
	}
	r.sync.healthy.Store(true)
	waitFor(t, "the residents rung", func() bool { return r.caller.Status().Phase == callengine.PhaseRinging })
	r.caller.end(callengine.PhaseInCall, callengine.LegConnected, "")
	waitFor(t, "the notice withdrawn", func() bool { _, c := r.log.snapshot(); return len(c) == 1 })
	waitFor(t, "the bell off once answered", func() bool { return !r.bell.Ringing() })
	if n := r.caller.ringCount(); n != 1 {
		t.Errorf("%d rings, want 1", n)
	}
}

// TestVisitorRungWhenHomeserverReturns: a press during an outage rings
// nobody (every invite unsent); the bell rings locally and the visitor
// is kept once; when the homeserver answers again within LocalRing the
// residents are rung, and a ring that reached them (here: unanswered,
// timed out) withdraws the kept notice, leaving the "nobody answered"
// notice to the ring's own notices. A second press meanwhile is the same
// visitor.
func TestVisitorRungWhenHomeserverReturns(t *testing.T) {
	r := newVisitRig(t, 5*time.Second, true)
	r.d.Press("gpio")
	waitFor(t, "the visitor kept", func() bool { a, _ := r.log.snapshot(); return len(a) == 1 })
	r.d.Press("gpio") // the visitor again: tried again, still nobody
	waitFor(t, "the second press tried", func() bool { return r.caller.ringCount() >= 2 })
	r.log.mu.Lock()
	firstHolds := slices.Clone(r.log.holds)
	r.log.mu.Unlock()
	// The bell rings on from the second press, and the kept notice waits
	// for it: held beyond the first press's ring timeout.
	if len(firstHolds) == 0 || firstHolds[0] <= 5*time.Second {
		t.Errorf("holds after the second press %v, want one beyond the first bell's end", firstHolds)
	}
	if !r.bell.Ringing() {
		t.Fatal("the bell is not ringing for the visitor")
	}
	r.caller.reach.Store(true)
	r.sync.healthy.Store(true)
	waitFor(t, "the residents rung", func() bool { return r.caller.Status().Phase == callengine.PhaseRinging })
	r.caller.end(callengine.PhaseIdle, callengine.LegEnded, callengine.ReasonInviteTimeout)
	waitFor(t, "the notice withdrawn", func() bool { _, c := r.log.snapshot(); return len(c) == 1 })
	waitFor(t, "the bell off after the ring", func() bool { return !r.bell.Ringing() })
	time.Sleep(3 * visitRetryPoll)
	r.n.Wait()
	r.log.mu.Lock()
	holds := slices.Clone(r.log.holds)
	r.log.mu.Unlock()
	// Held while the late ring went on (the failed retry of the second
	// press released it to the bell's end, then the late ring held it).
	if len(holds) == 0 || holds[len(holds)-1] < 5*time.Second {
		t.Errorf("holds after the press %v, want the last beyond the ring timeout", holds)
	}
	adds, _ := r.log.snapshot()
	if n := r.caller.ringCount(); len(adds) != 2 || n != 3 {
		t.Fatalf("kept %q and rang %d times, want the withdrawn visitor, the ring's own missed notice, and 3 rings", adds, n)
	}
	// The late ring's missed notice tells the time of the first press.
	if want := strings.SplitN(adds[0], "|", 2)[0] + "|Missed visitor: someone rang at " + strings.SplitN(adds[0], "|", 2)[0] + " and nobody answered."; !strings.HasPrefix(adds[1], want) {
		t.Errorf("the ring's missed notice %q, want %q…", adds[1], want)
	}
}

// TestVisitorNotRungAfterTheBell: once the bell has stopped, the
// homeserver's return rings nobody (the visitor has likely gone) and the
// kept notice stays.
func TestVisitorNotRungAfterTheBell(t *testing.T) {
	r := newVisitRig(t, 300*time.Millisecond, true)
	r.d.Press("gpio")
	waitFor(t, "the bell off", func() bool { a, _ := r.log.snapshot(); return len(a) == 1 && !r.bell.Ringing() })
	r.caller.reach.Store(true)
	r.sync.healthy.Store(true)
	time.Sleep(3 * visitRetryPoll)
	if n := r.caller.ringCount(); n != 1 {
		t.Errorf("%d rings, want the press's only", n)
	}
	if _, c := r.log.snapshot(); len(c) != 0 {
		t.Errorf("withdrawn %v", c)
	}
}
