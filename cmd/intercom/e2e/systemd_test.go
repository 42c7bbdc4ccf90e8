package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/doorbell/intercom/internal/testenv/dendrite"
	"github.com/doorbell/intercom/systemd/sdnotifytest"
)

// daemonUnderSystemd is the intercom binary started as systemd would start
// it: with NOTIFY_SOCKET and WATCHDOG_USEC set.
type daemonUnderSystemd struct {
	cmd   *exec.Cmd
	sock  *sdnotifytest.Socket
	log   *lockedBuffer
	start time.Time
	done  chan error
}

func startUnderSystemd(t testing.TB, bin, config string, watchdog time.Duration) *daemonUnderSystemd {
	t.Helper()
	d := &daemonUnderSystemd{sock: sdnotifytest.Listen(t), log: &lockedBuffer{}, done: make(chan error, 1)}
	d.cmd = exec.Command(bin, "run", "--config", config)
	d.cmd.Env = append(os.Environ(), "NOTIFY_SOCKET="+d.sock.Path, fmt.Sprintf("WATCHDOG_USEC=%d", watchdog.Microseconds()), "INTERCOM_ICE_LOOPBACK=1")
	d.cmd.Stdout, d.cmd.Stderr = d.log, d.log
	d.start = time.Now()
	if err := d.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { d.done <- d.cmd.Wait() }()
	t.Cleanup(func() {
		if d.cmd.ProcessState == nil {
			_ = d.cmd.Process.Kill()
			<-d.done
		}
		if t.Failed() {
			t.Logf("intercom log:\n%s", d.log.String())
		}
	})
	return d
}

// waitReady returns the time from process start to READY=1.
func (d *daemonUnderSystemd) waitReady(t testing.TB, within time.Duration) time.Duration {
	t.Helper()
	deadline := time.After(within)
	for {
		select {
		case m := <-d.sock.Msgs:
			if strings.HasPrefix(m, "READY=1") {
				return time.Since(d.start)
			}
			// The door runs before the homeserver answers: its start
			// timeout is extended meanwhile, and nothing else is sent.
			if !strings.HasPrefix(m, "EXTEND_TIMEOUT_USEC=") {
				t.Fatalf("message %q before READY=1", m)
			}
		case err := <-d.done:
			t.Fatalf("intercom exited before READY=1: %v", err)
		case <-deadline:
			t.Fatalf("no READY=1 within %v", within)
		}
	}
}

func (d *daemonUnderSystemd) waitLog(t testing.TB, what string, within time.Duration) {
	t.Helper()
	for end := time.Now().Add(within); time.Now().Before(end); time.Sleep(20 * time.Millisecond) {
		if strings.Contains(d.log.String(), what) {
			return
		}
	}
	t.Fatalf("log never said %q", what)
}

// The daemon under a fake systemd, against a real Dendrite: READY=1 after
// the first sync, watchdog pings while healthy, SIGHUP adds a resident
// (with a room) and is logged, SIGTERM sends STOPPING=1 and exits 0, and
// ExecStopPost's relay-off succeeds on the same file.
func TestDaemonUnderSystemd(t *testing.T) {
	if testing.Short() {
		t.Skip("needs Dendrite")
	}
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Minute)
	defer cancel()
	bin, err := buildIntercom()
	if err != nil {
		t.Fatal(err)
	}
	hs := dendrite.StartT(t)
	alice, err := hs.Register(ctx, "alice", "alice-password")
	if err != nil {
		t.Fatal(err)
	}
	bob, err := hs.Register(ctx, "bob", "bob-password")
	if err != nil {
		t.Fatal(err)
	}
	extra := fmt.Sprintf("api:\n  listen: %s\n", freeAddr(t))
	path := provisionSetupExtra(t, ctx, hs, extra, alice)

	d := startUnderSystemd(t, bin, path, time.Second)
	took := d.waitReady(t, 30*time.Second)
	t.Logf("process start → READY=1: %v (first login, one room created)", took)
	if os.Getenv("INTERCOM_E2E_LOG") != "" {
		t.Logf("log at READY:\n%s", d.log.String())
	}
	if k := countPrefix(d.sock.Collect(1600*time.Millisecond), "WATCHDOG=1"); k < 2 {
		t.Fatalf("%d watchdog pings in 1.6 s with WatchdogSec=1s, want ≥ 2", k)
	}

	// Add bob and reload.
	cfg, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	next := strings.Replace(string(cfg), fmt.Sprintf("[%q]", alice.UserID), fmt.Sprintf("[%q, %q]", alice.UserID, bob.UserID), 1)
	if next == string(cfg) {
		t.Fatal("residents line not found in the config")
	}
	if err := os.WriteFile(path, []byte(next), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := d.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	d.waitLog(t, "msg=reloaded", 30*time.Second)
	rooms, err := os.ReadFile(filepath.Join(filepath.Dir(path), "state", "direct_rooms.json"))
	if err != nil || !strings.Contains(string(rooms), bob.UserID) {
		t.Fatalf("no room for bob after the reload: %v %s", err, rooms)
	}
	// A broken file is refused and the daemon keeps running.
	if err := os.WriteFile(path, []byte(next+"bogus: 1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := d.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	d.waitLog(t, "reload refused; keeping the running configuration", 10*time.Second)

	if err := d.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	var msgs []string
	select {
	case err := <-d.done:
		if err != nil {
			t.Fatalf("exit after SIGTERM: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no exit within 10 s of SIGTERM (TimeoutStopSec)")
	}
	msgs = d.sock.Collect(100 * time.Millisecond)
	if !slices.Contains(msgs, "STOPPING=1") {
		t.Fatalf("no STOPPING=1 on SIGTERM; got %q", msgs)
	}

	// ExecStopPost: relay-off on the same file, without reading secrets.
	if err := os.WriteFile(path, []byte(next), 0o600); err != nil {
		t.Fatal(err)
	}
	os.Remove(filepath.Join(filepath.Dir(path), "password"))
	out, err := exec.Command(bin, "relay-off", "--config", path).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "sim") {
		t.Fatalf("relay-off: %v\n%s", err, out)
	}
}

// BenchmarkStartToReady measures process start → READY=1 against a local
// Dendrite, as systemd sees it: "cold" is the first start on a fresh state
// directory (password login, a direct room created per resident), "warm"
// a restart with the session and rooms kept. Rounds: INTERCOM_BENCH_ROUNDS
// (default 10). Target ≤ 2 s.
func BenchmarkStartToReady(b *testing.B) {
	rounds := 10
	if v, err := strconv.Atoi(os.Getenv("INTERCOM_BENCH_ROUNDS")); err == nil && v > 0 {
		rounds = v
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	bin, err := buildIntercom()
	if err != nil {
		b.Fatal(err)
	}
	hs := dendrite.StartT(b)
	alice, err := hs.Register(ctx, "alice", "alice-password")
	if err != nil {
		b.Fatal(err)
	}
	bob, err := hs.Register(ctx, "bob", "bob-password")
	if err != nil {
		b.Fatal(err)
	}
	const password = "intercom-password"
	if _, err := hs.Register(ctx, "intercom", password); err != nil {
		b.Fatal(err)
	}
	dir := b.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "password"), []byte(password), 0o600); err != nil {
		b.Fatal(err)
	}
	config := func(state string) string {
		path := filepath.Join(dir, state+".yaml")
		cfg := fmt.Sprintf("matrix:\n  homeserver: %s\n  user_id: %q\n  password_file: ./password\nstate_dir: ./%s\nresidents: [%q, %q]\napi:\n  listen: %s\n",
			hs.BaseURL, hs.UserID("intercom"), state, alice.UserID, bob.UserID, freeAddr(b))
		if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
			b.Fatal(err)
		}
		return path
	}
	var stops []time.Duration
	once := func(path string) time.Duration {
		d := startUnderSystemd(b, bin, path, 0)
		took := d.waitReady(b, time.Minute)
		t0 := time.Now()
		_ = d.cmd.Process.Signal(syscall.SIGTERM)
		<-d.done
		stops = append(stops, time.Since(t0))
		return took
	}
	for b.Loop() {
		var cold, warm []time.Duration
		warmCfg := config("warm")
		once(warmCfg) // provision the warm state
		for i := range rounds {
			cold = append(cold, once(config(fmt.Sprintf("cold%d", i))))
			warm = append(warm, once(warmCfg))
		}
		b.ReportMetric(ms(median(cold)), "cold_ready_ms")
		b.ReportMetric(ms(median(warm)), "warm_ready_ms")
		b.ReportMetric(ms(median(stops)), "sigterm_exit_ms")
		b.Logf("start → READY=1 over %d rounds: cold median %v (min %v, max %v); warm median %v (min %v, max %v); SIGTERM → exit median %v",
			rounds, median(cold), slices.Min(cold), slices.Max(cold), median(warm), slices.Min(warm), slices.Max(warm), median(stops))
	}
}

func countPrefix(msgs []string, prefix string) int {
	k := 0
	for _, m := range msgs {
		if strings.HasPrefix(m, prefix) {
			k++
		}
	}
	return k
}
