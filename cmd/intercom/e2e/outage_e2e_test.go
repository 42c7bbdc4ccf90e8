package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// The intercom admits a homeserver outage and gets over it (issue 15):
// /healthz answers 503 once /sync fails and 200 again within a few
// seconds of the homeserver's return, /api/status names the outage, and
// a press after the return rings the residents. These tests stop and
// restart the real Dendrite on the same port and data directory while
// the intercom binary runs.

// healthz returns the status code of the intercom's /healthz, 0 if the
// API did not answer.
func (e *e2e) healthz() int {
	resp, err := http.Get("http://" + e.api + "/healthz")
	if err != nil {
		return 0
	}
	resp.Body.Close()
	return resp.StatusCode
}

// waitHealthz polls /healthz every 10 ms until it answers code, and
// returns when it first did.
func (e *e2e) waitHealthz(ctx context.Context, code int) time.Time {
	e.t.Helper()
	for {
		if e.healthz() == code {
			return time.Now()
		}
		if e.hasExited() {
			e.t.Fatalf("intercom exited while waiting for /healthz %d", code)
		}
		select {
		case <-ctx.Done():
			e.t.Fatalf("/healthz never answered %d: %v", code, ctx.Err())
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// outage is the part of the matrix section of /api/status an outage
// shows.
type outage struct {
	Syncing          bool   `json:"syncing"`
	UnreachableSince string `json:"homeserver_unreachable_since"`
	Failures         int    `json:"failures"`
	LastError        string `json:"last_error"`
}

func (e *e2e) outage() outage {
	e.t.Helper()
	s, err := e.status()
	if err != nil {
		e.t.Fatal(err)
	}
	var o outage
	if err := json.Unmarshal(s.Matrix, &o); err != nil {
		e.t.Fatalf("matrix status %s: %v", s.Matrix, err)
	}
	return o
}

// stopHomeserver stops Dendrite (SIGTERM, waiting for it to exit) and
// returns when it is gone.
func (e *e2e) stopHomeserver() time.Time {
	e.t.Helper()
	if err := e.hs.Stop(); err != nil {
		e.t.Fatalf("stop dendrite: %v", err)
	}
	return time.Now()
}

// startHomeserver brings Dendrite back on the same port and data, and
// returns when it answers /_matrix/client/versions.
func (e *e2e) startHomeserver(ctx context.Context) time.Time {
	e.t.Helper()
	if err := e.hs.Restart(ctx); err != nil {
		e.t.Fatalf("restart dendrite: %v", err)
	}
	return time.Now()
}

// TestHomeserverRestartE2E: with the homeserver stopped, /healthz says
// 503 and /api/status says since when the homeserver is unreachable and
// why; once it is back the intercom is healthy again and a press rings
// the resident. It asserts behaviour, not timing (the benchmark below
// measures that).
func TestHomeserverRestartE2E(t *testing.T) {
	e := startSystem(t, "alice")
	alice := e.residents[0]
	ctx, cancel := context.WithTimeout(t.Context(), 90*time.Second)
	defer cancel()
	e.waitHealthz(ctx, http.StatusOK)

	stopped := e.stopHomeserver()
	e.waitHealthz(ctx, http.StatusServiceUnavailable)
	o := e.outage()
	since, err := time.Parse(time.RFC3339, o.UnreachableSince)
	if err != nil {
		t.Fatalf("homeserver_unreachable_since %q: %v (matrix status %+v)", o.UnreachableSince, err, o)
	}
	if o.Syncing || o.Failures == 0 || o.LastError == "" {
		t.Errorf("matrix status during the outage = %+v", o)
	}
	if since.After(time.Now()) || stopped.Sub(since) > time.Minute {
		t.Errorf("unreachable since %v, homeserver stopped at %v", since, stopped)
	}
	t.Logf("during the outage: %+v", o)

	e.startHomeserver(ctx)
	e.waitHealthz(ctx, http.StatusOK)
	if o := e.outage(); !o.Syncing || o.UnreachableSince != "" || o.LastError != "" {
		t.Errorf("matrix status after the return = %+v", o)
	}

	e.press()
	if _, err := alice.WaitFor(ctx, "incoming"); err != nil {
		t.Fatalf("a press after the homeserver's return did not ring alice: %v", err)
	}
	if err := alice.Reject(); err != nil {
		t.Fatal(err)
	}
	e.waitStatus(ctx, "idle after the reject", func(s status) bool { return s.State == "idle" })
}

// BenchmarkHomeserverOutage measures, over INTERCOM_BENCH_ROUNDS (default
// 5) stops and restarts of the real Dendrite with the intercom running:
// homeserver stopped (Dendrite has exited) → /healthz 503, and homeserver
// back (Dendrite answers /versions) → /healthz 200, medians and maxima.
// /healthz is polled every 10 ms, which bounds the resolution. Each
// outage lasts a few seconds, long enough for the sync backoff to reach
// its cap.
func BenchmarkHomeserverOutage(b *testing.B) {
	e := startSystem(b, "alice") // the intercom needs a resident to start
	rounds := 5
	if n, err := strconv.Atoi(os.Getenv("INTERCOM_BENCH_ROUNDS")); err == nil && n > 0 {
		rounds = n
	}
	outageFor := 8 * time.Second
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	var toDown, toUp, stopTook []time.Duration
	b.ResetTimer()
	for range b.N {
		for range rounds {
			e.waitHealthz(ctx, http.StatusOK)
			// Stop in the middle of an idle long poll, as an outage
			// usually finds the intercom.
			time.Sleep(time.Second)
			t0 := time.Now()
			stopped := e.stopHomeserver()
			down := e.waitHealthz(ctx, http.StatusServiceUnavailable)
			stopTook = append(stopTook, stopped.Sub(t0))
			toDown = append(toDown, max(down.Sub(stopped), 0))
			time.Sleep(outageFor - time.Since(stopped))
			back := e.startHomeserver(ctx)
			up := e.waitHealthz(ctx, http.StatusOK)
			toUp = append(toUp, up.Sub(back))
		}
	}
	b.StopTimer()
	b.ReportMetric(ms(median(toDown)), "stopped-to-503-ms")
	b.ReportMetric(ms(slicesMax(toDown)), "stopped-to-503-max-ms")
	b.ReportMetric(ms(median(toUp)), "back-to-200-ms")
	b.ReportMetric(ms(slicesMax(toUp)), "back-to-200-max-ms")
	b.ReportMetric(0, "ns/op")
	// testing keeps only the first 10 lines of a benchmark's log, which
	// the harness's own lines fill: print the rounds where they are seen.
	fmt.Printf("BenchmarkHomeserverOutage: %d rounds: stopped→503 %v; back→200 %v; dendrite's own stop took %v\n", len(toUp), toDown, toUp, stopTook)
}

func slicesMax(ds []time.Duration) time.Duration {
	var m time.Duration
	for _, d := range ds {
		m = max(m, d)
	}
	return m
}

// TestPressDuringOutageE2E: a press while the homeserver is stopped is
// not lost. The ring cannot reach anyone, so the intercom keeps a
// missed-visitor notice (with its snapshot) in state_dir; once the
// homeserver is back the resident gets it, once.
func TestPressDuringOutageE2E(t *testing.T) {
	e := startSystem(t, "alice")
	alice := e.residents[0]
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()
	e.waitHealthz(ctx, http.StatusOK)

	e.stopHomeserver()
	e.waitHealthz(ctx, http.StatusServiceUnavailable)
	pressed := e.press()
	for {
		if st, err := e.status(); err == nil && st.Ringer.Ringing {
			t.Logf("press → bell on during the outage: %v (polled)", time.Since(pressed).Round(time.Millisecond))
			break
		}
		if ctx.Err() != nil {
			t.Fatal("the bell never rang")
		}
		time.Sleep(2 * time.Millisecond)
	}
	var queued int
	for queued == 0 {
		queued = e.pendingVisitors()
		if ctx.Err() != nil {
			t.Fatal("the press during the outage was never queued")
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Logf("press → missed-visitor notice queued in state_dir: %v", time.Since(pressed).Round(time.Millisecond))
	files, _ := filepath.Glob(filepath.Join(e.dir, "state", "visitors", "*.json"))
	if queued != 1 || len(files) != 1 {
		t.Fatalf("%d queued, files %v; want 1", queued, files)
	}
	// The ring reached nobody, and the visitor still hears the bell for
	// the ring timeout (30 s here).
	if st, err := e.status(); err != nil || !st.Ringer.Ringing || st.State != "idle" {
		t.Errorf("after the failed ring: state %q, ringer ringing %v (%v); want the bell on", st.State, st.Ringer.Ringing, err)
	}

	back := e.startHomeserver(ctx)
	msg := waitMessage(ctx, t, alice, "m.text", "could not reach you")
	img := waitMessage(ctx, t, alice, "m.image", "")
	t.Logf("homeserver back → notice at the resident %v: %q (snapshot %v bytes)", msg.TS.Sub(back).Round(time.Millisecond), msg.Str("body"), img.Num("size"))
	if !strings.Contains(msg.Str("body"), "Missed visitor: someone rang at ") {
		t.Errorf("notice %q", msg.Str("body"))
	}
	for e.pendingVisitors() != 0 {
		if ctx.Err() != nil {
			t.Fatal("the queue never emptied")
		}
		time.Sleep(50 * time.Millisecond)
	}
	// Once: nothing more arrives.
	time.Sleep(2 * time.Second)
	n := 0
	for _, ev := range alice.Events() {
		if ev.Name == "message" && strings.Contains(ev.Str("body"), "could not reach you") {
			n++
		}
	}
	if n != 1 {
		t.Errorf("the resident got the notice %d times, want once", n)
	}
}

// pendingVisitors is matrix.pending_visitor_notices of /api/status.
func (e *e2e) pendingVisitors() int {
	e.t.Helper()
	s, err := e.status()
	if err != nil {
		e.t.Fatal(err)
	}
	var m struct {
		Pending int `json:"pending_visitor_notices"`
	}
	if err := json.Unmarshal(s.Matrix, &m); err != nil {
		e.t.Fatalf("matrix status %s: %v", s.Matrix, err)
	}
	return m.Pending
}
