package runloop

import (
	"slices"
	"sort"
	"sync"
	"testing"
	"testing/synctest"
	"time"
)

// fakeClock is an AfterFunc whose time moves only when the test says.
type fakeClock struct {
	mu      sync.Mutex
	now     time.Duration
	pending []*fakeTimer
}

type fakeTimer struct {
	c    *fakeClock
	at   time.Duration
	f    func()
	done bool
}

func (c *fakeClock) AfterFunc(d time.Duration, f func()) Stopper {
	c.mu.Lock()
	defer c.mu.Unlock()
	ft := &fakeTimer{c: c, at: c.now + d, f: f}
	c.pending = append(c.pending, ft)
	return ft
}

func (ft *fakeTimer) Stop() bool {
	ft.c.mu.Lock()
	defer ft.c.mu.Unlock()
	was := !ft.done
	ft.done = true
	return was
}

// advance moves the clock by d and runs what is due, in time order, on
// the caller's goroutine.
func (c *fakeClock) advance(d time.Duration) {
	c.mu.Lock()
	c.now += d
	var due []*fakeTimer
	for _, ft := range c.pending {
		if !ft.done && ft.at <= c.now {
			ft.done = true
			due = append(due, ft)
		}
	}
	c.mu.Unlock()
	sort.SliceStable(due, func(i, j int) bool { return due[i].at < due[j].at })
	for _, ft := range due {
		ft.f()
	}
}

func TestTimersFakeClock(t *testing.T) {
	type step struct {
		op    string // "start", "stop", "stopall", "advance"
		id    string
		d     time.Duration
		fired []string // after an advance: the ids fired by it
	}
	s := time.Second
	tests := []struct {
		name     string
		steps    []step
		wantLeft int
	}{
		{
			name: "fires once when due",
			steps: []step{
				{op: "start", id: "ring", d: 60 * s},
				{op: "advance", d: 59 * s},
				{op: "advance", d: s, fired: []string{"ring"}},
				{op: "advance", d: time.Hour},
			},
		},
		{
			name: "start replaces the timer of the same id",
			steps: []step{
				{op: "start", id: "flush", d: 2 * s},
				{op: "advance", d: s},
				{op: "start", id: "flush", d: 2 * s},
				{op: "advance", d: s},
				{op: "advance", d: s, fired: []string{"flush"}},
			},
		},
		{
			name: "stop cancels",
			steps: []step{
				{op: "start", id: "ring", d: 60 * s},
				{op: "start", id: "connect", d: 30 * s},
				{op: "stop", id: "ring"},
				{op: "stop", id: "unknown"},
				{op: "advance", d: time.Hour, fired: []string{"connect"}},
			},
		},
		{
			name: "stopall cancels every timer",
			steps: []step{
				{op: "start", id: "ring", d: 60 * s},
				{op: "start", id: "connect", d: 30 * s},
				{op: "stopall"},
				{op: "advance", d: time.Hour},
			},
		},
		{
			name: "ids are independent and fire in time order",
			steps: []step{
				{op: "start", id: "b", d: 2 * s},
				{op: "start", id: "a", d: s},
				{op: "start", id: "c", d: time.Hour},
				{op: "advance", d: 5 * s, fired: []string{"a", "b"}},
			},
			wantLeft: 1,
		},
		{
			name: "zero duration fires on the next tick",
			steps: []step{
				{op: "start", id: "now", d: 0},
				{op: "advance", d: 0, fired: []string{"now"}},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clock := new(fakeClock)
			timers := NewTimers[string](clock.AfterFunc)
			var fired []string
			for i, st := range tt.steps {
				switch st.op {
				case "start":
					timers.Start(st.id, st.d, func() { fired = append(fired, st.id) })
				case "stop":
					timers.Stop(st.id)
				case "stopall":
					timers.StopAll()
				case "advance":
					fired = nil
					clock.advance(st.d)
					if !slices.Equal(fired, st.fired) {
						t.Fatalf("step %d: advancing %v fired %v, want %v", i, st.d, fired, st.fired)
					}
				}
			}
			if n := timers.Len(); n != tt.wantLeft {
				t.Errorf("%d timers left in the table, want %d", n, tt.wantLeft)
			}
		})
	}
}

// A fire that comes too late for its timer (it was replaced or stopped
// between going off and running) is dropped.
func TestTimersStaleFire(t *testing.T) {
	clock := new(fakeClock)
	timers := NewTimers[int](clock.AfterFunc)
	var fired []string
	timers.Start(1, time.Second, func() { fired = append(fired, "old") })
	clock.mu.Lock()
	stale := clock.pending[0].f // the timer goes off...
	clock.mu.Unlock()
	timers.Start(1, time.Minute, func() { fired = append(fired, "new") }) // ...as the loop replaces it
	stale()
	if len(fired) != 0 {
		t.Fatalf("a replaced timer fired: %v", fired)
	}
	if timers.Len() != 1 {
		t.Fatalf("the replacement left the table")
	}
}

// The loop shape Timers is made for, on the real clock in a synctest
// bubble: fires come back through the loop's Queue.
func TestTimersSynctest(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var inbox Queue[string]
		var timers Timers[string] // zero value: system clock
		push := func(id string) func() { return func() { inbox.Push(id) } }
		start := time.Now()
		timers.Start("ring", 60*time.Second, push("ring"))
		timers.Start("flush", 2*time.Second, push("flush"))
		timers.Start("connect", 10*time.Second, push("connect"))
		timers.Stop("connect")
		type fire struct {
			id string
			at time.Duration
		}
		var got []fire
		for len(got) < 2 {
			<-inbox.Wait()
			for _, id := range inbox.Take() {
				got = append(got, fire{id, time.Since(start)})
			}
		}
		want := []fire{{"flush", 2 * time.Second}, {"ring", 60 * time.Second}}
		if !slices.Equal(got, want) {
			t.Errorf("fired %v, want %v", got, want)
		}
		if n := timers.Len(); n != 0 {
			t.Errorf("%d timers left", n)
		}
		time.Sleep(time.Hour)
		if n := inbox.Len(); n != 0 {
			t.Errorf("a stopped timer fired: %v", inbox.Take())
		}
	})
}
