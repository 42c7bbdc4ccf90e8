package nodeproc

import (
	"context"
	"errors"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// startTest starts testdata/driver.mjs, a real node process speaking the
// drivers' line protocol without a browser.
func startTest(t *testing.T, opts Options) (*Proc, Event, *tailBuffer) {
	t.Helper()
	if _, err := exec.LookPath("node"); err != nil {
		t.Skip("needs node")
	}
	dir, err := filepath.Abs("testdata")
	if err != nil {
		t.Fatal(err)
	}
	log := &tailBuffer{max: 1 << 20}
	opts.Name, opts.Dir, opts.Log = "test", dir, log
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	p, ready, err := Start(ctx, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Close() })
	return p, ready, log
}

func TestProc(t *testing.T) {
	var stats atomic.Int64
	p, ready, log := startTest(t, Options{
		Args:  []string{"--flag"},
		Quiet: []string{"stat"},
		Handle: func(ev Event) bool {
			if ev.Name == "stat" {
				stats.Add(1)
				return false
			}
			return true
		},
	})
	if ready.Str("userId") != "@t:hs" || !strings.Contains(string(ready.Raw), `"--flag"`) {
		t.Errorf("ready = %s, want the user and --flag", ready)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()

	// An event before "ready" is kept and found.
	if _, err := p.WaitFor(ctx, "tick"); err != nil {
		t.Fatal(err)
	}
	reply, err := p.Do(ctx, map[string]any{"cmd": "echo", "args": map[string]any{"x": "y"}})
	if err != nil {
		t.Fatal(err)
	}
	if res, _ := reply.Fields["result"].(map[string]any); res["x"] != "y" {
		t.Errorf("echo reply = %s", reply)
	}
	if _, err := p.Do(ctx, map[string]any{"cmd": "fail"}); err == nil || err.Error() != "it failed" {
		t.Errorf("fail: %v, want the reply's error", err)
	}
	// A line that is no event is logged and passed over.
	if _, err := p.Do(ctx, map[string]any{"cmd": "garbage"}); err != nil {
		t.Fatal(err)
	}

	// Successive WaitFors of one name see successive events, whatever
	// other names come between.
	if _, err := p.Do(ctx, map[string]any{"cmd": "emit", "names": []string{"a", "b", "stat", "a", "stat"}}); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if _, err := p.WaitFor(ctx, "a"); err != nil {
			t.Fatal(err)
		}
	}
	short, cancelShort := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancelShort()
	if _, err := p.WaitFor(short, "a"); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("third WaitFor(a) = %v, want the deadline", err)
	}
	// Handle kept the stats out of the log, and Await saw them.
	if err := p.Await(ctx, func() bool { return stats.Load() == 2 }); err != nil {
		t.Fatal(err)
	}
	for _, ev := range p.Events() {
		if ev.Name == "stat" || ev.Name == "reply" {
			t.Errorf("Events holds %s", ev)
		}
	}
	// Wait without a key looks from the start.
	if ev, err := p.Wait(ctx, "", func(ev Event) bool { return ev.Name == "a" }); err != nil || ev.Name != "a" {
		t.Errorf("Wait from the start: %v, %v", ev, err)
	}

	// The driver dies: Do and the waits fail with ErrExited, Close returns
	// its exit status.
	if _, err := p.Do(ctx, map[string]any{"cmd": "exit"}); !errors.Is(err, ErrExited) {
		t.Errorf("Do after exit: %v, want ErrExited", err)
	}
	if _, err := p.WaitFor(ctx, "never"); !errors.Is(err, ErrExited) {
		t.Errorf("WaitFor after exit: %v, want ErrExited", err)
	}
	if err := p.Close(); err == nil || !strings.Contains(err.Error(), "exit status 3") {
		t.Errorf("Close = %v, want exit status 3", err)
	}

	got := log.String()
	for _, want := range []string{"test driver: up", `test event: {"ts":`, `decode event "not json"`} {
		if !strings.Contains(got, want) {
			t.Errorf("log lacks %q:\n%s", want, got)
		}
	}
	if strings.Contains(got, `"event":"stat"`) {
		t.Errorf("log holds a quiet event:\n%s", got)
	}
}

func TestProcClose(t *testing.T) {
	p, _, _ := startTest(t, Options{})
	if err := p.Close(); err != nil {
		t.Errorf("Close = %v, want a clean exit on stdin EOF", err)
	}
	if err := p.Close(); err != nil {
		t.Errorf("second Close = %v", err)
	}
	if _, err := p.Do(t.Context(), map[string]any{"cmd": "echo"}); err == nil {
		t.Error("Do after Close succeeded")
	}
}

func TestStartFails(t *testing.T) {
	if _, err := exec.LookPath("node"); err != nil {
		t.Skip("needs node")
	}
	t.Setenv("NODEPROC_TEST_FAIL", "login refused")
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	_, _, err := Start(ctx, Options{Name: "test", Dir: "testdata"})
	if err == nil || !strings.Contains(err.Error(), "login refused") {
		t.Errorf("Start = %v, want the driver's error", err)
	}
}

func TestTestLog(t *testing.T) {
	var lines []string
	w := &testLog{t: &recordTB{TB: t, lines: &lines}, prefix: "x: "}
	_, _ = w.Write([]byte("one\ntw"))
	_, _ = w.Write([]byte("o\nthree"))
	if want := []string{"x: one", "x: two"}; strings.Join(lines, "|") != strings.Join(want, "|") {
		t.Errorf("lines %q, want %q", lines, want)
	}
}

type recordTB struct {
	testing.TB
	lines *[]string
}

func (r *recordTB) Log(a ...any) { *r.lines = append(*r.lines, a[0].(string)) }
