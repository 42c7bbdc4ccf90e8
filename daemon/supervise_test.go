package daemon

import (
	"context"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/doorbell/intercom/matrix"
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

// fakeSync is a Matrix session whose sync health the test sets.
type fakeSync struct {
	mu sync.Mutex
	st matrix.Status
}

func (f *fakeSync) Healthy() bool { return f.Status().Healthy }
func (f *fakeSync) Status() matrix.Status {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.st
}
func (f *fakeSync) set(fn func(*matrix.Status)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	fn(&f.st)
}

// The daemon's supervisor end to end over a real unixgram socket (the
// protocol itself is tested in package systemd): only start-timeout
// extensions before the first sync, READY=1 with a status once it succeeds, WATCHDOG=1 while the sync
// is visibly retrying, no ping while it is stuck and a STATUS= that says
// so, pings again when it recovers. The windows are a couple of ping
// intervals wide: a loaded 2-core machine can delay a goroutine by 100 ms.
func TestSupervisorSyncProgress(t *testing.T) {
	sock := sdnotifytest.Listen(t)
	t.Setenv("NOTIFY_SOCKET", sock.Path)
	t.Setenv("WATCHDOG_USEC", "400000") // 400 ms: pings every 200 ms
	t.Setenv("WATCHDOG_PID", "")

	fs := &fakeSync{}
	log := slog.New(slog.DiscardHandler)
	s := newSupervisor(log, fs, func() string { return "ringing 2 residents" })
	const stall = time.Second
	s.Probes[0].Check = (&syncProgress{status: fs.Status, stall: stall}).check

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()

	// Before the first sync only extensions of the start timeout.
	for _, m := range sock.Collect(300 * time.Millisecond) {
		if !strings.HasPrefix(m, "EXTEND_TIMEOUT_USEC=") {
			t.Fatalf("sent %q before the first sync", m)
		}
	}
	fs.set(func(st *matrix.Status) { st.Healthy, st.LastSync = true, time.Now() })
	if m := sock.Next(t, time.Second); m != "READY=1\nSTATUS=ringing 2 residents" {
		t.Fatalf("first message %q, want READY=1 with STATUS", m)
	}

	// The homeserver goes away: the loop fails and backs off, but counts
	// its failures, so it is alive and the watchdog stays petted.
	for i := 1; i <= 4; i++ {
		fs.set(func(st *matrix.Status) { st.Healthy, st.ConsecutiveFailures = false, i })
		if k := count(sock.Collect(400*time.Millisecond), "WATCHDOG=1"); k < 1 {
			t.Fatalf("no watchdog ping while the sync loop retries (failure %d)", i)
		}
	}

	// Stuck: neither a success nor another failure. After the stall
	// allowance the pings stop, and stay stopped; STATUS= says why.
	msgs := sock.Collect(stall + 300*time.Millisecond)
	if !strings.HasPrefix(strings.Join(msgs, "|"), "WATCHDOG=1") {
		t.Logf("messages while the stall allowance ran: %q", msgs)
	}
	more := sock.Collect(2 * time.Second)
	if k := count(more, "WATCHDOG=1"); k != 0 {
		t.Fatalf("%d watchdog pings while the sync loop is stuck: %q", k, more)
	}
	var stuck string
	for _, m := range append(msgs, more...) {
		if strings.HasPrefix(m, "STATUS=stuck") {
			stuck = m
		}
	}
	if !strings.Contains(stuck, "matrix sync: no /sync finished") {
		t.Fatalf("STATUS %q does not say the sync is stuck", stuck)
	}

	// It recovers: pings come back.
	fs.set(func(st *matrix.Status) { st.Healthy, st.LastSync, st.ConsecutiveFailures = true, time.Now(), 0 })
	if k := count(sock.Collect(800*time.Millisecond), "WATCHDOG=1"); k < 2 {
		t.Fatalf("%d watchdog pings after recovery, want ≥ 2", k)
	}

	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// A loop with a heartbeat is watched too.
func TestHeartbeatProbe(t *testing.T) {
	now := time.Now()
	hb := heartbeatFunc(func() time.Time { return now.Add(-10 * time.Second) })
	p := heartbeatProbe("device loop", hb, 5*time.Second)
	if len(p) != 1 {
		t.Fatal("no probe for a loop with a heartbeat")
	}
	if err := p[0].Check(now); err == nil {
		t.Fatal("a heartbeat 10 s old passed a 5 s allowance")
	}
	if err := p[0].Check(now.Add(-6 * time.Second)); err != nil {
		t.Fatal(err)
	}
	if p := heartbeatProbe("no heartbeat", struct{}{}, time.Second); p != nil {
		t.Fatal("probe for a loop without a heartbeat")
	}
}

type heartbeatFunc func() time.Time

func (f heartbeatFunc) Heartbeat() time.Time { return f() }

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
