package daemon

import (
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	pgpio "periph.io/x/conn/v3/gpio"

	"github.com/doorbell/intercom/callengine"
	"github.com/doorbell/intercom/device"
	"github.com/doorbell/intercom/gpio"
	"github.com/doorbell/intercom/matrix"
	"github.com/doorbell/intercom/systemd/sdnotifytest"
)

// stuckCaller is a call engine whose Ring blocks until released, as a
// deadlocked engine would.
type stuckCaller struct{ release chan struct{} }

func (c *stuckCaller) Ring(ctx context.Context, _ []callengine.Resident) error {
	select {
	case <-c.release:
	case <-ctx.Done():
	}
	return nil
}
func (c *stuckCaller) Hangup() {}
func (c *stuckCaller) Status() callengine.Status {
	return callengine.Status{Phase: callengine.PhaseIdle}
}
func (c *stuckCaller) Subscribe() (<-chan callengine.Status, func()) {
	return make(chan callengine.Status), func() {}
}

// The watchdog covers the main loops, not only the sync: over a fake
// NOTIFY_SOCKET, a press loop stuck in a press, then a GPIO button loop
// stuck in its callback, each stop the WATCHDOG=1 pings while the sync is
// perfectly healthy, and the pings come back once the loop moves again.
func TestSupervisorStuckLoopsStopWatchdog(t *testing.T) {
	sock := sdnotifytest.Listen(t)
	t.Setenv("NOTIFY_SOCKET", sock.Path)
	t.Setenv("WATCHDOG_USEC", "400000") // pings every 200 ms
	t.Setenv("WATCHDOG_PID", "")
	fs := &fakeSync{st: matrix.Status{Healthy: true, LastSync: time.Now()}}
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()

	caller := &stuckCaller{release: make(chan struct{})}
	ic := device.New(device.Config{Caller: caller, Residents: func() []callengine.Resident {
		return []callengine.Resident{{User: "@alice:hs.test", Room: "!a:hs.test"}}
	}, Heartbeat: 20 * time.Millisecond})
	go ic.Run(ctx)

	pin := gpio.SimButtonPin("BUTTON")
	button, err := gpio.NewButton(pin, gpio.ActiveLow, 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	buttonStuck := make(chan struct{})
	go button.Run(ctx, func() { <-buttonStuck })

	var logs lockedBuffer
	// The button waits on its pin for up to 1 s when idle, so its
	// allowance here is 2.5 s; the press loop beats every 20 ms, and its
	// allowance is 1 s (a loaded 2-core machine can delay a goroutine by
	// a few hundred milliseconds).
	probes := append(heartbeatProbe("device loop", ic, time.Second),
		heartbeatProbe("gpio button loop", button, 2500*time.Millisecond)...)
	s := newSupervisor(slog.New(slog.NewTextHandler(&logs, nil)), fs, nil, probes...)
	s.Probes[0].Check = func(time.Time) error { return nil } // the sync is fine throughout
	go s.Run(ctx)
	if m := sock.Next(t, time.Second); m != "READY=1" {
		t.Fatalf("first message %q, want READY=1", m)
	}
	if k := count(sock.Collect(time.Second), "WATCHDOG=1"); k < 3 {
		t.Fatalf("%d pings in 1 s while every loop is alive", k)
	}

	// The press loop gets stuck in a ring that never returns.
	ic.Press("api")
	sock.Collect(1500 * time.Millisecond) // the allowance runs out
	if msgs := sock.Collect(time.Second); count(msgs, "WATCHDOG=1") != 0 {
		t.Fatalf("pings while the press loop is stuck: %q", msgs)
	}
	if !strings.Contains(logs.String(), "device loop: no heartbeat") {
		t.Fatalf("stuck press loop not logged:\n%s", logs.String())
	}
	close(caller.release)
	if k := count(sock.Collect(time.Second), "WATCHDOG=1"); k < 2 {
		t.Fatalf("%d pings after the press loop recovered", k)
	}

	// The button loop gets stuck in its press callback.
	pin.EdgesChan <- pgpio.Low
	sock.Collect(3 * time.Second)
	if msgs := sock.Collect(time.Second); count(msgs, "WATCHDOG=1") != 0 {
		t.Fatalf("pings while the button loop is stuck: %q", msgs)
	}
	if !strings.Contains(logs.String(), "gpio button loop: no heartbeat") {
		t.Fatalf("stuck button loop not logged:\n%s", logs.String())
	}
	close(buttonStuck)
	if k := count(sock.Collect(time.Second), "WATCHDOG=1"); k < 2 {
		t.Fatalf("%d pings after the button loop recovered", k)
	}
}

// daemonSupervisor watches every loop that has a heartbeat.
func TestDaemonSupervisorLoops(t *testing.T) {
	ic := device.New(device.Config{Caller: &stuckCaller{}})
	button, err := gpio.NewButton(gpio.SimButtonPin("B"), gpio.ActiveLow, 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	side := &matrixSide{}
	s := daemonSupervisor(slog.New(slog.DiscardHandler), &fakeSync{}, side, 1,
		loop{"device loop", ic}, loop{"gpio button loop", button}, loop{"no heartbeat", struct{}{}})
	var names []string
	var sideProbe func(time.Time) error
	for _, p := range s.Probes {
		names = append(names, p.Name)
		if p.Name == "matrix side" {
			sideProbe = p.Check
		}
	}
	if got := strings.Join(names, ","); got != "matrix sync,device loop,gpio button loop,matrix side" {
		t.Fatalf("probes %s", got)
	}
	// The Matrix side's loops are watched once they run, not before: an
	// engine made long after the start has an old heartbeat.
	now := time.Now()
	if err := sideProbe(now.Add(time.Hour)); err != nil {
		t.Fatalf("no Matrix loop running yet, probe says %v", err)
	}
	side.watch(loop{"call engine", beatAt{now}}, loop{"no heartbeat", struct{}{}})
	if err := sideProbe(now.Add(time.Second)); err != nil {
		t.Fatalf("fresh engine: %v", err)
	}
	if err := sideProbe(now.Add(time.Minute)); err == nil || !strings.Contains(err.Error(), "call engine: no heartbeat") {
		t.Fatalf("stale engine: %v", err)
	}
}

// beatAt is a loop whose last heartbeat is fixed.
type beatAt struct{ t time.Time }

func (b beatAt) Heartbeat() time.Time { return b.t }
