package device

import (
	"bufio"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
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
type failingCaller struct{ fakeCaller }

func (f *failingCaller) Ring(ctx context.Context, r []callengine.Resident) error {
	if err := f.fakeCaller.Ring(ctx, r); err != nil {
		return err
	}
	f.mu.Lock()
	f.status.Calls = []callengine.CallStatus{{CallID: "c1", State: callengine.LegEnded, Reason: callengine.ReasonUnknownError}}
	f.mu.Unlock()
	f.set(callengine.PhaseIdle)
	return nil
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
	caller := &failingCaller{fakeCaller{status: callengine.Status{Phase: callengine.PhaseIdle}}}
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
	caller.mu.Lock()
	caller.status.Calls = []callengine.CallStatus{{CallID: "c2", State: callengine.LegEnded, Reason: callengine.ReasonUserHangup}}
	caller.mu.Unlock()
	caller.set(callengine.PhaseIdle)
	if unreached(caller.Status()) {
		t.Error("a rejected ring counted as reaching nobody")
	}
	cancel()
	<-done
}
