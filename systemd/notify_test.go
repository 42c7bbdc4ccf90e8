package systemd

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/doorbell/intercom/systemd/sdnotifytest"
)

func count(msgs []string, prefix string) int {
	k := 0
	for _, m := range msgs {
		if strings.HasPrefix(m, prefix) {
			k++
		}
	}
	return k
}

// fakeLoop is a main loop whose liveness the test sets.
type fakeLoop struct {
	mu  sync.Mutex
	err error
}

func (f *fakeLoop) check(time.Time) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.err
}

func (f *fakeLoop) set(err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.err = err
}

// The notify protocol end to end over a real unixgram socket: nothing
// before Ready passes, READY=1 with a status once it does, WATCHDOG=1 at
// half the interval while every probe passes, no ping while one fails,
// pings again when it recovers, STOPPING=1 on stop.
func TestSupervisorNotifyProtocol(t *testing.T) {
	sock := sdnotifytest.Listen(t)
	t.Setenv("NOTIFY_SOCKET", sock.Path)
	t.Setenv("WATCHDOG_USEC", "200000") // 200 ms: pings every 100 ms
	t.Setenv("WATCHDOG_PID", "")

	s := NewSupervisor(slog.New(slog.DiscardHandler))
	if s.Watchdog != 200*time.Millisecond {
		t.Fatalf("watchdog %v, want 200ms from WATCHDOG_USEC", s.Watchdog)
	}
	var up atomic.Bool
	s.Ready = func() error {
		if !up.Load() {
			return errors.New("not up yet")
		}
		return nil
	}
	s.Status = func() string { return "ringing 2 residents" }
	loop := &fakeLoop{}
	s.Probes = []Probe{{Name: "main loop", Check: loop.check}}

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()

	// Before ready only start-timeout extensions, one interval each.
	for _, m := range sock.Collect(150 * time.Millisecond) {
		if m != "EXTEND_TIMEOUT_USEC=200000" {
			t.Fatalf("sent %q before ready", m)
		}
	}
	up.Store(true)
	if m := sock.Next(t, time.Second); m != "READY=1\nSTATUS=ringing 2 residents" {
		t.Fatalf("first message %q, want READY=1 with STATUS", m)
	}
	if k := count(sock.Collect(600*time.Millisecond), "WATCHDOG=1"); k < 4 {
		t.Fatalf("%d watchdog pings in 600 ms while healthy, want ≥ 4", k)
	}

	// Stuck: after the ping already under way the pings stop, and stay
	// stopped.
	loop.set(errors.New("no progress"))
	sock.Collect(150 * time.Millisecond)
	if msgs := sock.Collect(time.Second); count(msgs, "WATCHDOG=1") != 0 {
		t.Fatalf("%d watchdog pings while the loop is stuck: %q", count(msgs, "WATCHDOG=1"), msgs)
	}

	// It recovers: pings come back.
	loop.set(nil)
	if k := count(sock.Collect(400*time.Millisecond), "WATCHDOG=1"); k < 2 {
		t.Fatalf("%d watchdog pings after recovery, want ≥ 2", k)
	}

	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	var last string
	for _, m := range sock.Collect(200 * time.Millisecond) {
		last = m
	}
	if last != "STOPPING=1" {
		t.Fatalf("last message %q, want STOPPING=1", last)
	}
}

// A stuck loop is logged once with the reason, and STATUS= tells
// systemctl status which loop and why.
func TestSupervisorStuckStatus(t *testing.T) {
	sock := sdnotifytest.Listen(t)
	t.Setenv("NOTIFY_SOCKET", sock.Path)
	t.Setenv("WATCHDOG_USEC", "100000")
	var logs lockedBuffer
	s := NewSupervisor(slog.New(slog.NewTextHandler(&logs, nil)))
	loop := &fakeLoop{}
	s.Probes = []Probe{{Name: "main loop", Check: loop.check}}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go s.Run(ctx)
	if m := sock.Next(t, time.Second); m != "READY=1" {
		t.Fatalf("got %q, want READY=1", m)
	}
	loop.set(errors.New("no heartbeat for 3s"))
	var stuck string
	for _, m := range sock.Collect(600 * time.Millisecond) {
		if strings.HasPrefix(m, "STATUS=stuck") {
			stuck = m
		}
	}
	if !strings.Contains(stuck, "main loop: no heartbeat for 3s") {
		t.Fatalf("STATUS %q does not say the loop is stuck", stuck)
	}
	if k := strings.Count(logs.String(), "main loop stuck"); k != 1 {
		t.Fatalf("stuck loop logged %d times, want once:\n%s", k, logs.String())
	}
}

// NewSupervisor takes the watchdog interval from $WATCHDOG_USEC, for this
// process only (sd_watchdog_enabled(3)).
func TestNewSupervisorWatchdog(t *testing.T) {
	for _, tc := range []struct {
		name, usec, pid string
		want            time.Duration
		warn            bool
	}{
		{name: "no watchdog"},
		{name: "any process", usec: "200000", want: 200 * time.Millisecond},
		{name: "this process", usec: "30000000", pid: strconv.Itoa(os.Getpid()), want: 30 * time.Second},
		{name: "another process", usec: "200000", pid: strconv.Itoa(os.Getpid() + 1)},
		{name: "malformed", usec: "soon", warn: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv("WATCHDOG_USEC", tc.usec)
			t.Setenv("WATCHDOG_PID", tc.pid)
			var logs lockedBuffer
			s := NewSupervisor(slog.New(slog.NewTextHandler(&logs, nil)))
			if s.Watchdog != tc.want {
				t.Errorf("watchdog %v, want %v", s.Watchdog, tc.want)
			}
			if got := strings.Contains(logs.String(), "watchdog settings ignored"); got != tc.warn {
				t.Errorf("warning logged: %v, want %v:\n%s", got, tc.warn, logs.String())
			}
		})
	}
}

// recorder is a Notifier that keeps what it is sent.
type recorder struct {
	mu   sync.Mutex
	msgs []string
	err  error
}

func (r *recorder) Notify(state string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.msgs = append(r.msgs, state)
	return r.err
}

func (r *recorder) sent() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.msgs...)
}

// Until Ready passes, the start timeout is extended by one watchdog
// interval at half the interval while every probe passes (the door's
// local loops run before the homeserver answers), with the start status;
// a stuck loop stops the extensions, so systemd's start timeout ends a
// start whose loops hang, as the watchdog would after READY=1.
func TestSupervisorExtendsStart(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := &recorder{}
		var up atomic.Bool
		loop := &fakeLoop{}
		s := &Supervisor{
			Ready: func() error {
				if !up.Load() {
					return errors.New("homeserver not reached yet")
				}
				return nil
			},
			StartStatus: func() string { return "door up; homeserver\nunreachable" },
			Status:      func() string { return "ready" },
			Watchdog:    time.Second,
			Notifier:    r,
			Probes:      []Probe{{Name: "button loop", Check: loop.check}},
		}
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan error, 1)
		go func() { done <- s.Run(ctx) }()
		time.Sleep(1900 * time.Millisecond)
		want := "EXTEND_TIMEOUT_USEC=1000000\nSTATUS=door up; homeserver unreachable"
		msgs := r.sent()
		if k := count(msgs, "EXTEND_TIMEOUT_USEC="); k != 4 || msgs[0] != want {
			t.Fatalf("%d extensions in 1.9 s at a 1 s watchdog, want 4 (at once, then every 500 ms) like %q: %q", k, want, msgs)
		}
		if count(msgs, "READY=1") != 0 || count(msgs, "WATCHDOG=1") != 0 {
			t.Fatalf("ready or pinged before Ready passed: %q", msgs)
		}
		loop.set(errors.New("no heartbeat for 31s"))
		time.Sleep(2 * time.Second)
		if k := count(r.sent(), "EXTEND_TIMEOUT_USEC="); k != 4 {
			t.Fatalf("%d extensions, want none more while a loop is stuck", k)
		}
		loop.set(nil)
		up.Store(true)
		time.Sleep(time.Second)
		cancel()
		<-done
		if k := count(r.sent(), "READY=1"); k != 1 {
			t.Fatalf("READY=1 sent %d times: %q", k, r.sent())
		}
	})
}

// With its own Notifier and clock the Supervisor needs no socket and no
// real time: the probes see the injected clock, pings come at half the
// interval, a status stays on one line, and a unit without a watchdog gets
// READY=1 and STOPPING=1 only.
func TestSupervisorInjected(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		clock := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
		var seen atomic.Pointer[time.Time]
		r := &recorder{}
		s := &Supervisor{
			Status:   func() string { return "two\nlines" },
			Watchdog: time.Second,
			Notifier: r,
			Now:      func() time.Time { return clock },
			Probes: []Probe{{Name: "loop", Check: func(now time.Time) error {
				seen.Store(&now)
				return nil
			}}},
		}
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan error, 1)
		go func() { done <- s.Run(ctx) }()
		time.Sleep(2*time.Second + 900*time.Millisecond)
		cancel()
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		msgs := r.sent()
		if len(msgs) == 0 || msgs[0] != "READY=1\nSTATUS=two lines" {
			t.Fatalf("messages %q, want READY=1 with a one-line STATUS first", msgs)
		}
		// One ping at once, then one every 500 ms.
		if k := count(msgs, "WATCHDOG=1"); k != 6 {
			t.Errorf("%d pings in 2.9 s at a 1 s watchdog, want 6: %q", k, msgs)
		}
		if msgs[len(msgs)-1] != "STOPPING=1" {
			t.Errorf("last message %q, want STOPPING=1", msgs[len(msgs)-1])
		}
		if p := seen.Load(); p == nil || !p.Equal(clock) {
			t.Errorf("probe checked at %v, want the injected clock %v", p, clock)
		}
	})
	synctest.Test(t, func(t *testing.T) {
		var logs lockedBuffer
		r := &recorder{err: errors.New("no socket")}
		s := &Supervisor{Notifier: r, Log: slog.New(slog.NewTextHandler(&logs, nil))}
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan error, 1)
		go func() { done <- s.Run(ctx) }()
		time.Sleep(time.Minute)
		cancel()
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		if got := strings.Join(r.sent(), "|"); got != "READY=1|STOPPING=1" {
			t.Errorf("without a watchdog sent %q, want READY=1|STOPPING=1", got)
		}
		if k := strings.Count(logs.String(), "notify systemd"); k != 2 {
			t.Errorf("%d failed sends logged, want 2:\n%s", k, logs.String())
		}
	})
}

// lockedBuffer is a log sink that goroutines may write while a test reads.
type lockedBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
