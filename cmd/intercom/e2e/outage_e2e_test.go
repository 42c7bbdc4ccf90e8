package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"github.com/doorbell/intercom/internal/testenv/resident"
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
// its cap. In each outage the visitor presses once: press (POST /api/ring
// answered) → bell on (/api/status polled every 2 ms), and, the homeserver
// back within the ring timeout, homeserver back → the resident's page
// shows the incoming call (she rejects it).
func BenchmarkHomeserverOutage(b *testing.B) {
	e := startSystem(b, "alice")
	alice := e.residents[0]
	rounds := 5
	if n, err := strconv.Atoi(os.Getenv("INTERCOM_BENCH_ROUNDS")); err == nil && n > 0 {
		rounds = n
	}
	outageFor := 8 * time.Second
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	var toDown, toUp, stopTook, toBell, toRinging, toRung []time.Duration
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
			pressed := e.press()
			toBell = append(toBell, e.waitBell(ctx, true).Sub(pressed))
			time.Sleep(outageFor - time.Since(stopped))
			back := e.startHomeserver(ctx)
			up := e.waitHealthz(ctx, http.StatusOK)
			toUp = append(toUp, up.Sub(back))
			// The intercom's share: its late ring placed (its invite then
			// leaves within one send), before the resident's own sync,
			// which backed off through the outage too, brings it to her.
			e.waitStatus(ctx, "ringing again", func(s status) bool { return s.State == "ringing" })
			toRinging = append(toRinging, time.Since(back))
			if _, err := alice.WaitFor(ctx, "incoming"); err != nil {
				b.Fatalf("the visitor of the outage was not rung once the homeserver was back: %v", err)
			}
			toRung = append(toRung, time.Since(back))
			if err := alice.Reject(); err != nil {
				b.Fatal(err)
			}
			e.waitStatus(ctx, "idle after the reject", func(s status) bool { return s.State == "idle" && !s.Ringer.Ringing })
		}
	}
	b.StopTimer()
	b.ReportMetric(ms(median(toDown)), "stopped-to-503-ms")
	b.ReportMetric(ms(slicesMax(toDown)), "stopped-to-503-max-ms")
	b.ReportMetric(ms(median(toUp)), "back-to-200-ms")
	b.ReportMetric(ms(slicesMax(toUp)), "back-to-200-max-ms")
	b.ReportMetric(ms(median(toBell)), "press-to-bell-ms")
	b.ReportMetric(ms(slicesMax(toBell)), "press-to-bell-max-ms")
	b.ReportMetric(ms(median(toRinging)), "back-to-ringing-ms")
	b.ReportMetric(ms(median(toRung)), "back-to-rung-ms")
	b.ReportMetric(ms(slicesMax(toRung)), "back-to-rung-max-ms")
	b.ReportMetric(0, "ns/op")
	// testing keeps only the first 10 lines of a benchmark's log, which
	// the harness's own lines fill: print the rounds where they are seen.
	fmt.Printf("BenchmarkHomeserverOutage: %d rounds: stopped→503 %v; back→200 %v; press→bell %v; back→ringing again %v; back→resident rung %v; dendrite's own stop took %v\n",
		len(toUp), toDown, toUp, toBell, toRinging, toRung, stopTook)
}

func slicesMax(ds []time.Duration) time.Duration {
	var m time.Duration
	for _, d := range ds {
		m = max(m, d)
	}
	return m
}

// outageRing is the ring timeout of the outage tests: the bell rings this
// long for a visitor nobody could be told of.
const outageRing = 10 * time.Second

// waitBell polls /api/status every 2 ms until the bell is on (or off),
// and returns when it first was.
func (e *e2e) waitBell(ctx context.Context, on bool) time.Time {
	e.t.Helper()
	for {
		if st, err := e.status(); err == nil && st.Ringer.Ringing == on {
			return time.Now()
		}
		if e.hasExited() {
			e.t.Fatal("intercom exited")
		}
		if ctx.Err() != nil {
			e.t.Fatalf("the bell never turned %v", on)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// waitPending waits until matrix.pending_visitor_notices is n.
func (e *e2e) waitPending(ctx context.Context, n int) {
	e.t.Helper()
	for e.pendingVisitors() != n {
		if ctx.Err() != nil {
			e.t.Fatalf("pending visitor notices never %d (%d)", n, e.pendingVisitors())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// noticesAt counts the resident's messages whose body contains s.
func noticesAt(r *resident.Resident, s string) int {
	n := 0
	for _, ev := range r.Events() {
		if ev.Name == "message" && strings.Contains(ev.Str("body"), s) {
			n++
		}
	}
	return n
}

// checkMissedNotice waits for the "could not reach you" notice and its
// snapshot at r, checks that it tells the press's time, and that it comes
// once.
func checkMissedNotice(ctx context.Context, t *testing.T, r *resident.Resident, pressed, back time.Time) {
	t.Helper()
	msg := waitMessage(ctx, t, r, "m.text", "could not reach you")
	img := waitMessage(ctx, t, r, "m.image", "")
	t.Logf("homeserver back → notice at the resident %v: %q (snapshot %v bytes)", msg.TS.Sub(back).Round(time.Millisecond), msg.Str("body"), img.Num("size"))
	if at := pressed.Format("15:04:05"); !strings.Contains(msg.Str("body"), "Missed visitor: someone rang at "+at) &&
		!strings.Contains(msg.Str("body"), "Missed visitor: someone rang at "+pressed.Add(-time.Second).Format("15:04:05")) {
		t.Errorf("notice %q, want the press's time %s", msg.Str("body"), at)
	}
	time.Sleep(2 * time.Second) // once: nothing more arrives
	if n := noticesAt(r, "could not reach you"); n != 1 {
		t.Errorf("the resident got the notice %d times, want once", n)
	}
}

// TestPressDuringOutageE2E: a press while the homeserver is stopped is
// not lost. The ring cannot reach anyone: the bell rings for the ring
// timeout, and the intercom keeps a missed-visitor notice (with its
// snapshot) in state_dir; the homeserver is back only after the bell
// stopped, so the resident gets the notice, once, with the press's time.
func TestPressDuringOutageE2E(t *testing.T) {
	e := startSystemWith(t, systemOptions{RingTimeout: outageRing}, "alice")
	alice := e.residents[0]
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()
	e.waitHealthz(ctx, http.StatusOK)

	e.stopHomeserver()
	e.waitHealthz(ctx, http.StatusServiceUnavailable)
	pressed := e.press()
	t.Logf("press → bell on during the outage: %v (polled)", e.waitBell(ctx, true).Sub(pressed).Round(time.Millisecond))
	e.waitPending(ctx, 1)
	t.Logf("press → missed-visitor notice queued in state_dir: %v", time.Since(pressed).Round(time.Millisecond))
	files, _ := filepath.Glob(filepath.Join(e.dir, "state", "visitors", "*.json"))
	if len(files) != 1 {
		t.Fatalf("files %v; want 1 record", files)
	}
	if st, err := e.status(); err != nil || !st.Ringer.Ringing || st.State != "idle" {
		t.Errorf("after the failed ring: state %q, ringer ringing %v (%v); want the bell on", st.State, st.Ringer.Ringing, err)
	}
	off := e.waitBell(ctx, false)
	if d := off.Sub(pressed); d < outageRing {
		t.Errorf("the bell rang %v, want the ring timeout (%v)", d, outageRing)
	}

	back := e.startHomeserver(ctx)
	checkMissedNotice(ctx, t, alice, pressed, back)
	e.waitPending(ctx, 0)
}

// TestPressDuringBlipE2E: a press during a brief outage (the homeserver
// back while the bell still rings) reaches the resident: the intercom
// rings them once the homeserver answers, and the missed-visitor notice it
// had kept is withdrawn, so a resident who rejected the call is not told
// later that the door could not reach them.
func TestPressDuringBlipE2E(t *testing.T) {
	e := startSystem(t, "alice") // ring timeout 30 s
	alice := e.residents[0]
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()
	e.waitHealthz(ctx, http.StatusOK)

	e.stopHomeserver()
	e.waitHealthz(ctx, http.StatusServiceUnavailable)
	pressed := e.press()
	e.waitBell(ctx, true)
	e.waitPending(ctx, 1)
	back := e.startHomeserver(ctx)
	if _, err := alice.WaitFor(ctx, "incoming"); err != nil {
		t.Fatalf("the homeserver came back within the ring timeout, but alice was not rung: %v", err)
	}
	t.Logf("homeserver back → alice rung: %v (press %v before)", time.Since(back).Round(time.Millisecond), back.Sub(pressed).Round(time.Millisecond))
	if err := alice.Reject(); err != nil {
		t.Fatal(err)
	}
	e.waitPending(ctx, 0) // withdrawn: she was reached
	e.waitStatus(ctx, "idle after the reject", func(s status) bool { return s.State == "idle" && !s.Ringer.Ringing })
	time.Sleep(3 * time.Second)
	if n := noticesAt(alice, "could not reach you"); n != 0 {
		t.Errorf("alice was rung but still told %d times that the door could not reach her", n)
	}
}

// TestStartWithoutHomeserverE2E: an intercom that starts while its
// homeserver is down (a board booting before its network) has its door
// working at once: the API answers, a press rings the bell for the ring
// timeout and is kept, and the status says what is missing. Once the
// homeserver is up the intercom logs in, gets healthy, tells the resident
// of the visitor, and the next press rings her.
func TestStartWithoutHomeserverE2E(t *testing.T) {
	e := startSystemWith(t, systemOptions{RingTimeout: outageRing}, "alice")
	alice := e.residents[0]
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()
	e.stop()
	e.stopHomeserver()

	started := time.Now()
	e.start()
	for {
		if _, err := e.status(); err == nil {
			break
		}
		if e.hasExited() || ctx.Err() != nil {
			t.Fatal("the API never answered while the homeserver was down")
		}
		time.Sleep(2 * time.Millisecond)
	}
	t.Logf("start → API answers, homeserver down: %v", time.Since(started).Round(time.Millisecond))
	pressed := e.press()
	t.Logf("press → bell on before login: %v (polled)", e.waitBell(ctx, true).Sub(pressed).Round(time.Millisecond))
	e.waitPending(ctx, 1)
	var m struct {
		Setup            string `json:"setup"`
		UnreachableSince string `json:"homeserver_unreachable_since"`
	}
	for m.UnreachableSince == "" {
		s, err := e.status()
		if err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal(s.Matrix, &m); err != nil {
			t.Fatal(err)
		}
		if ctx.Err() != nil {
			t.Fatalf("status never said the homeserver is unreachable: %s", s.Matrix)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if m.Setup != "logging in" || e.healthz() != http.StatusServiceUnavailable {
		t.Errorf("before login: setup %q, /healthz %d", m.Setup, e.healthz())
	}
	t.Logf("status before login: %+v", m)
	e.waitBell(ctx, false)

	back := e.startHomeserver(ctx)
	healthy := e.waitHealthz(ctx, http.StatusOK)
	t.Logf("homeserver back → intercom healthy (logged in, rooms, first sync): %v", healthy.Sub(back).Round(time.Millisecond))
	checkMissedNotice(ctx, t, alice, pressed, back)
	e.waitPending(ctx, 0)

	e.press()
	if _, err := alice.WaitFor(ctx, "incoming"); err != nil {
		t.Fatalf("a press after the late login did not ring alice: %v", err)
	}
	if err := alice.Reject(); err != nil {
		t.Fatal(err)
	}
	e.waitStatus(ctx, "idle after the reject", func(s status) bool { return s.State == "idle" })
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
