package daemon

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/doorbell/intercom/callengine"
	"github.com/doorbell/intercom/callengine/ring"
	"github.com/doorbell/intercom/device"
	"github.com/doorbell/intercom/gpio"
	"github.com/doorbell/intercom/internal/runloop"
	"github.com/doorbell/intercom/matrix"
	"github.com/doorbell/intercom/provisioning"
)

// scriptLine is a ring path whose status the test scripts; Ring shows
// ringing (or fails with err) at once.
type scriptLine struct {
	st     *runloop.Latest[callengine.Status]
	mu     sync.Mutex
	err    error
	leg    callengine.CallStatus
	rungAt time.Time
}

func newScriptLine(leg callengine.CallStatus) *scriptLine {
	return &scriptLine{st: runloop.NewLatest(callengine.Status{Phase: callengine.PhaseIdle, Calls: []callengine.CallStatus{}}), leg: leg}
}

func (l *scriptLine) Ring(context.Context, []callengine.Resident) error {
	l.mu.Lock()
	err := l.err
	l.mu.Unlock()
	if err != nil {
		return err
	}
	l.show(callengine.PhaseRinging, callengine.LegRinging, "")
	return nil
}

func (l *scriptLine) show(ph callengine.Phase, leg callengine.LegState, reason string) {
	c := l.leg
	c.State, c.Reason, c.Since = leg, reason, time.Now()
	l.st.Publish(callengine.Status{Phase: ph, Since: time.Now(), Calls: []callengine.CallStatus{c}})
}

func (l *scriptLine) fail(err error) { l.mu.Lock(); l.err = err; l.mu.Unlock() }

func (l *scriptLine) Withdraw() {
	if l.Status().Phase == callengine.PhaseRinging {
		l.show(callengine.PhaseIdle, callengine.LegEnded, "answered_elsewhere")
	}
}
func (l *scriptLine) Hangup()                                       { l.show(callengine.PhaseIdle, callengine.LegEnded, "user_hangup") }
func (l *scriptLine) Status() callengine.Status                     { return l.st.Get() }
func (l *scriptLine) Subscribe() (<-chan callengine.Status, func()) { return l.st.Subscribe() }

type nopTransport struct{}

func (nopTransport) SendRoomEvent(context.Context, callengine.RoomID, string, any) error { return nil }

// eventLog records the door's events as the metrics see them.
type eventLog struct {
	mu  sync.Mutex
	evs []device.Event
}

func (e *eventLog) add(ev device.Event) { e.mu.Lock(); e.evs = append(e.evs, ev); e.mu.Unlock() }

func (e *eventLog) count(kind, outcome string) int {
	e.mu.Lock()
	defer e.mu.Unlock()
	n := 0
	for _, ev := range e.evs {
		if ev.Kind != kind {
			continue
		}
		if c, ok := ev.Data.(device.CallEvent); outcome == "" || ok && c.Outcome == outcome {
			n++
		}
	}
	return n
}

// TestMetricsCountTheDoor scripts presses, answers and door commands
// through the real intercom, ring coordinator and door (the paths and the
// relay are fakes), then reads /metrics with the Prometheus text parser
// and checks every counter and histogram count exactly.
func TestMetricsCountTheDoor(t *testing.T) {
	const alice, mallory = callengine.UserID("@alice:hs.test"), callengine.UserID("@mallory:hs.test")
	direct := newScriptLine(callengine.CallStatus{CallID: "c1", Room: "!a:hs.test", Resident: alice, Direction: "outbound"})
	household := newScriptLine(callengine.CallStatus{CallID: "h1", Room: "!h:hs.test", Resident: alice, Direction: "outbound"})
	coord := ring.NewCoordinator(ring.Config{Paths: []ring.PathLine{{Path: ring.Direct, Line: direct}, {Path: ring.Household, Line: household}}})

	relay, err := gpio.NewRelay(gpio.SimPin("RELAY"), gpio.ActiveHigh)
	if err != nil {
		t.Fatal(err)
	}
	door, err := device.NewDoor(device.DoorOptions{Relay: relay,
		Policy: device.DoorConfig{Authorized: []callengine.UserID{alice}, Pulse: 100 * time.Millisecond}})
	if err != nil {
		t.Fatal(err)
	}
	var syncErrors uint64 = 3
	lastSync := time.Unix(1_700_000_000, 0)
	log := &eventLog{}
	var intercom *device.Intercom
	mets := newMetrics(metricSources{
		Sync: func() matrix.Status {
			return matrix.Status{Healthy: true, LastSync: lastSync, SyncErrors: syncErrors}
		},
		Call:           func() callengine.Status { return intercom.CallStatus() },
		VisitorsQueued: func() int { return 2 },
		VideoLoss:      func() (float64, bool) { return 0.25, true },
	})
	history, err := device.OpenHistory(t.TempDir(), 10, 1<<20, nil)
	if err != nil {
		t.Fatal(err)
	}
	intercom = device.New(device.Config{Caller: coord, Relay: relay, Door: door, History: history,
		Residents: func() []callengine.Resident { return []callengine.Resident{{User: alice, Room: "!a:hs.test"}} },
		OnEvent:   func(ev device.Event) { mets.observe(ev); log.add(ev) }})

	ctx, cancel := context.WithCancel(t.Context())
	var wg sync.WaitGroup
	for _, run := range []func(context.Context) error{coord.Run, door.Run, intercom.Run} {
		wg.Add(1)
		go func() { defer wg.Done(); _ = run(ctx) }()
	}
	defer wg.Wait()
	defer cancel()
	srv := httptest.NewServer(mets.handler())
	defer srv.Close()

	// 1: a press by the button, answered on the classic path, the
	// door opened during the call (and a stranger refused), hung up.
	intercom.Press("gpio")
	waitUntil(t, "first ring", func() bool { return log.count("ring", "") == 1 })
	// The classic engine's transport: the first invite the homeserver
	// takes after the press is timed, the second and other types are not.
	invites := invitesTimed{Transport: nopTransport{}, sent: mets.inviteSent}
	for _, typ := range []string{callengine.TypeCandidates, callengine.TypeInvite, callengine.TypeInvite} {
		if err := invites.SendRoomEvent(ctx, "!a:hs.test", typ, nil); err != nil {
			t.Fatal(err)
		}
	}
	household.show(callengine.PhaseRinging, callengine.LegRinging, "")
	direct.show(callengine.PhaseInCall, callengine.LegAnswering, "")
	waitUntil(t, "answer", func() bool { return log.count("call", device.OutcomeAnswered) == 1 })
	time.Sleep(20 * time.Millisecond) // answer → media, timed by the histogram
	direct.show(callengine.PhaseInCall, callengine.LegConnected, "")
	waitUntil(t, "media", func() bool { return log.count("call", device.OutcomeConnected) == 1 })

	// During the call: the per-call series exist, labelled by path.
	during := scrape(t, srv.URL)
	if v := gauge(during, "intercom_call_video_loss_ratio", "path", "classic"); v != 0.25 {
		t.Errorf("video loss during the classic call: %v", v)
	}

	now := time.Now()
	door.Handle(device.DoorRequest{EventID: "$m", Room: "!a:hs.test", Sender: mallory, Text: "!open", Timestamp: now, ServerNow: now}, now)
	door.Handle(device.DoorRequest{EventID: "$a", Room: "!a:hs.test", Sender: alice, Text: "!open", Timestamp: now, ServerNow: now}, now)
	door.Handle(device.DoorRequest{EventID: "$a", Room: "!a:hs.test", Sender: alice, Text: "!open", Timestamp: now, ServerNow: now}, now)
	waitUntil(t, "door verdicts", func() bool { return log.count("door", "") == 3 })
	intercom.Hangup()
	waitUntil(t, "first call ended", func() bool { return log.count("call", device.OutcomeEnded) == 1 })

	// 2: a press through the API that rings both paths and times out.
	intercom.Press("api")
	waitUntil(t, "second ring", func() bool { return log.count("ring", "") == 2 })
	household.show(callengine.PhaseRinging, callengine.LegRinging, "")
	direct.show(callengine.PhaseIdle, callengine.LegEnded, callengine.ReasonInviteTimeout)
	household.show(callengine.PhaseIdle, callengine.LegEnded, callengine.ReasonInviteTimeout)
	waitUntil(t, "missed", func() bool { return log.count("call", device.OutcomeMissed) == 1 })

	// 3: a press no path can ring.
	direct.fail(errors.New("homeserver away"))
	household.fail(errors.New("homeserver away"))
	intercom.Press("api")
	waitUntil(t, "failed", func() bool { return log.count("call", device.OutcomeFailed) == 1 })

	after := scrape(t, srv.URL)
	for _, c := range []struct {
		name, label, value string
		want               float64
	}{
		{"intercom_presses_total", "source", "gpio", 1},
		{"intercom_presses_total", "source", "api", 2},
		{"intercom_rings_total", "path", "classic", 2},
		{"intercom_rings_total", "path", "household", 2},
		{"intercom_rings_total", "path", "matrixrtc", 0},
		{"intercom_answers_total", "path", "classic", 1},
		{"intercom_answers_total", "path", "household", 0},
		{"intercom_ring_outcomes_total", "outcome", "answered", 1},
		{"intercom_ring_outcomes_total", "outcome", "missed", 1},
		{"intercom_ring_outcomes_total", "outcome", "failed", 1},
		{"intercom_door_opens_total", "", "", 1},
		{"intercom_door_refusals_total", "reason", "unauthorized", 1},
		{"intercom_door_refusals_total", "reason", "duplicate", 1},
		{"intercom_door_refusals_total", "reason", "stale", 0},
		{"intercom_door_relay_failures_total", "", "", 0},
		{"intercom_matrix_sync_errors_total", "", "", 3},
		{"intercom_matrix_last_sync_timestamp_seconds", "", "", 1_700_000_000},
		{"intercom_matrix_sync_healthy", "", "", 1},
		{"intercom_visitor_notices_queued", "", "", 2},
	} {
		if got := gauge(after, c.name, c.label, c.value); got != c.want {
			t.Errorf("%s{%s=%q} = %v, want %v", c.name, c.label, c.value, got, c.want)
		}
	}
	if h := histogram(after, "intercom_press_to_ring_seconds", "", ""); h.GetSampleCount() != 2 || h.GetSampleSum() <= 0 {
		t.Errorf("press → ring: %d samples, sum %v; want 2 (the failed press placed no ring)", h.GetSampleCount(), h.GetSampleSum())
	}
	if h := histogram(after, "intercom_press_to_invite_sent_seconds", "", ""); h.GetSampleCount() != 1 {
		t.Errorf("press → invite sent: %d samples, want 1", h.GetSampleCount())
	}
	if h := histogram(after, "intercom_answer_to_media_seconds", "path", "classic"); h.GetSampleCount() != 1 || h.GetSampleSum() < 0.02 {
		t.Errorf("answer → media: %d samples, sum %v; want 1 of at least 20 ms", h.GetSampleCount(), h.GetSampleSum())
	}
	// Process and Go collectors are on the daemon's registry.
	for _, name := range []string{"process_cpu_seconds_total", "go_goroutines"} {
		if _, ok := after[name]; !ok {
			t.Errorf("%s missing", name)
		}
	}
	// The same story in the visitor history, newest first.
	visits := history.List()
	if len(visits) != 3 {
		t.Fatalf("history %+v, want 3 visitors", visits)
	}
	if v := visits[2]; v.Outcome != device.OutcomeAnswered || v.Path != "classic" || v.AnsweredBy != alice || !v.DoorOpened || v.DoorOpenedBy != alice {
		t.Errorf("first visitor %+v", v)
	}
	if v := visits[1]; v.Outcome != device.OutcomeMissed || len(v.Paths) != 2 || v.DoorOpened {
		t.Errorf("second visitor %+v", v)
	}
	if v := visits[0]; v.Outcome != device.OutcomeFailed || len(v.Paths) != 0 {
		t.Errorf("third visitor %+v", v)
	}
	// No call now: the per-call series are gone.
	if _, ok := after["intercom_call_video_loss_ratio"]; ok {
		t.Error("per-call loss still reported after the call ended")
	}
}

func scrape(t *testing.T, url string) map[string]*dto.MetricFamily {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("parse /metrics: %v", err)
	}
	return fams
}

// find returns the metric of family name whose label has value ("" for
// none), or nil.
func find(fams map[string]*dto.MetricFamily, name, label, value string) *dto.Metric {
	f, ok := fams[name]
	if !ok {
		return nil
	}
	for _, m := range f.GetMetric() {
		if label == "" {
			return m
		}
		for _, l := range m.GetLabel() {
			if l.GetName() == label && l.GetValue() == value {
				return m
			}
		}
	}
	return nil
}

// gauge is a counter's or gauge's value; -1 if absent.
func gauge(fams map[string]*dto.MetricFamily, name, label, value string) float64 {
	m := find(fams, name, label, value)
	switch {
	case m == nil:
		return -1
	case m.Counter != nil:
		return m.Counter.GetValue()
	case m.Gauge != nil:
		return m.Gauge.GetValue()
	}
	return -1
}

func histogram(fams map[string]*dto.MetricFamily, name, label, value string) *dto.Histogram {
	if m := find(fams, name, label, value); m != nil {
		return m.GetHistogram()
	}
	return &dto.Histogram{}
}

// TestMetricsBehindTheGuard: /metrics is mounted on the API's mux, as Run
// does, so off loopback it needs the token like every other request.
func TestMetricsBehindTheGuard(t *testing.T) {
	const token = "s3cret-token-0123456789"
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", newMetrics(metricSources{}).handler())
	h, err := apiHandler(provisioning.API{Listen: ":0", Token: token}, &net.TCPAddr{IP: net.IPv4zero, Port: 41234}, mux, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, bearer := range []string{"", "wrong-token-0123456789", token} {
		r := httptest.NewRequest(http.MethodGet, "/metrics", nil)
		r.Host = "192.168.1.20:41234"
		if bearer != "" {
			r.Header.Set("Authorization", "Bearer "+bearer)
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, r)
		want := http.StatusUnauthorized
		if bearer == token {
			want = http.StatusOK
		}
		if rec.Code != want {
			t.Errorf("bearer %q: HTTP %d, want %d", bearer, rec.Code, want)
		}
	}
}
