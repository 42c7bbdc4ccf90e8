package mqtt

import (
	"bytes"
	"context"
	"encoding/json"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/doorbell/intercom/callengine"
	"github.com/doorbell/intercom/device"
	"github.com/doorbell/intercom/internal/runloop"
	"github.com/doorbell/intercom/internal/testenv/mosquitto"
)

// start runs a publisher for cfg until the test ends and returns it.
func start(t *testing.T, cfg Config) *Publisher {
	t.Helper()
	if cfg.ClientID == "" {
		cfg.ClientID = "intercom-test"
	}
	if cfg.Prefix == "" {
		cfg.Prefix, cfg.Node = "intercom/door", "door"
	}
	if cfg.Backoff.Base == 0 {
		cfg.Backoff = runloop.Backoff{Base: 20 * time.Millisecond, Max: 200 * time.Millisecond}
	}
	cfg.Device = DeviceInfo{Name: "Front door", Version: "test"}
	p, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		if err := p.Run(ctx); err != nil {
			t.Errorf("Run: %v", err)
		}
	}()
	t.Cleanup(func() { cancel(); wg.Wait() })
	return p
}

func waitConnected(t *testing.T, p *Publisher) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !p.Status().Connected {
		if time.Now().After(deadline) {
			t.Fatalf("not connected: %+v", p.Status())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func decode(t testing.TB, b []byte) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatalf("not JSON: %v: %s", err, b)
	}
	return m
}

// TestDiscoveryRetained: a subscriber that connects after the intercom
// gets every discovery config retained, valid JSON with what Home
// Assistant needs, pointing at topics the intercom publishes; and none
// has a command topic.
func TestDiscoveryRetained(t *testing.T) {
	b := mosquitto.Start(t, mosquitto.Options{})
	p := start(t, Config{Broker: b.URL, DiscoveryPrefix: "homeassistant"})
	waitConnected(t, p)
	sub := mosquitto.Subscribe(t, b.URL, "", "")
	want := map[string]string{ // topic → component
		"homeassistant/event/door/doorbell/config":        "event",
		"homeassistant/event/door/door/config":            "event",
		"homeassistant/binary_sensor/door/ringing/config": "binary_sensor",
		"homeassistant/sensor/door/call_state/config":     "sensor",
		"homeassistant/sensor/door/last_visitor/config":   "sensor",
	}
	published := map[string]bool{"intercom/door/availability": true, "intercom/door/state": true,
		"intercom/door/last_visitor": true, "intercom/door/event/press": true, "intercom/door/event/relay": true}
	uniques := map[string]bool{}
	for topic := range want {
		m, _ := sub.Next(t, 0, topic, nil)
		if !m.Retain {
			t.Errorf("%s not retained", topic)
		}
		cfg := decode(t, m.Payload)
		for _, k := range []string{"name", "unique_id", "state_topic", "availability_topic", "device", "origin", "qos"} {
			if _, ok := cfg[k]; !ok {
				t.Errorf("%s lacks %s: %s", topic, k, m.Payload)
			}
		}
		for k := range cfg {
			if strings.Contains(k, "command") {
				t.Errorf("%s has %s: nothing on MQTT may command the door", topic, k)
			}
		}
		if st, _ := cfg["state_topic"].(string); !published[st] {
			t.Errorf("%s reads %q, which the intercom does not publish", topic, st)
		}
		if a, _ := cfg["availability_topic"].(string); a != "intercom/door/availability" {
			t.Errorf("%s availability %q", topic, a)
		}
		if id, _ := cfg["default_entity_id"].(string); !strings.HasPrefix(id, want[topic]+".door_") {
			t.Errorf("%s default_entity_id %q", topic, id)
		}
		u, _ := cfg["unique_id"].(string)
		if uniques[u] {
			t.Errorf("unique_id %q twice", u)
		}
		uniques[u] = true
		dev, _ := cfg["device"].(map[string]any)
		if ids, _ := dev["identifiers"].([]any); len(ids) != 1 || ids[0] != "intercom_door" || dev["name"] != "Front door" {
			t.Errorf("%s device %v", topic, dev)
		}
	}
	bell := decode(t, mustMessage(t, sub, "homeassistant/event/door/doorbell/config").Payload)
	if bell["device_class"] != "doorbell" || !strings.Contains(string(mustJSON(bell["event_types"])), `"press"`) {
		t.Errorf("doorbell entity: %v", bell)
	}
	if got := mustMessage(t, sub, "intercom/door/availability"); string(got.Payload) != "online" || !got.Retain {
		t.Errorf("availability %q retained %v", got.Payload, got.Retain)
	}
	st := decode(t, mustMessage(t, sub, "intercom/door/state").Payload)
	if st["state"] != "idle" {
		t.Errorf("state %v", st)
	}
}

func mustMessage(t testing.TB, s *mosquitto.Subscriber, topic string) mosquitto.Message {
	t.Helper()
	m, _ := s.Next(t, 0, topic, nil)
	return m
}

// TestEventsArrive feeds the door's typed events as device.Intercom
// publishes them: each arrives on event/<kind> as the SSE stream's JSON,
// field for field, and the retained state and last visitor follow.
func TestEventsArrive(t *testing.T) {
	b := mosquitto.Start(t, mosquitto.Options{})
	p := start(t, Config{Broker: b.URL})
	waitConnected(t, p)
	sub := mosquitto.Subscribe(t, b.URL, "", "")
	mustMessage(t, sub, "intercom/door/state")

	const alice = callengine.UserID("@alice:hs.test")
	at := time.Now().Truncate(time.Millisecond)
	evs := []device.Event{
		{Kind: "press", Type: "press.v1", Time: at, Data: device.PressEvent{Source: "gpio", Time: at}},
		{Kind: "status", Type: "status.v1", Time: at, Data: device.Status{State: callengine.PhaseRinging, Since: at}},
		{Kind: "ring", Type: "ring.v1", Time: at, Data: device.RingEvent{Ring: 1, RangAt: at, Paths: []string{"classic"}, PressToRing: 0.001}},
		{Kind: "call", Type: "call.v1", Time: at, Data: device.CallEvent{Ring: 1, RangAt: at, Outcome: device.OutcomeAnswered, Path: "classic", AnsweredBy: alice}},
		{Kind: "door", Type: "door.v1", Time: at, Data: device.DoorEvent{Verdict: device.VerdictOpen, Why: "authorized", EventID: "$e", Sender: alice, Room: "!r:hs.test"}},
		{Kind: "relay", Type: "relay.v1", Time: at, Data: device.RelayEvent{On: true, At: at, Pulse: time.Second, EventID: "$e", Sender: alice, Room: "!r:hs.test"}},
		{Kind: "call", Type: "call.v1", Time: at, Data: device.CallEvent{Ring: 1, RangAt: at, Outcome: device.OutcomeEnded, Path: "classic", AnsweredBy: alice}},
	}
	for _, ev := range evs {
		p.Observe(ev)
	}
	for _, ev := range evs {
		if ev.Kind == "status" {
			continue
		}
		want, _ := json.Marshal(ev)
		m, _ := sub.Next(t, 0, "intercom/door/event/"+ev.Kind, func(b []byte) bool { return bytes.Equal(b, want) })
		if m.Retain {
			t.Errorf("event %s retained", ev.Kind)
		}
		got := decode(t, m.Payload)
		for _, k := range []string{"kind", "type", "time", "data"} {
			if _, ok := got[k]; !ok {
				t.Errorf("%s lacks %s", ev.Kind, k)
			}
		}
	}
	press := decode(t, mustMessage(t, sub, "intercom/door/event/press").Payload)
	if d, _ := press["data"].(map[string]any); press["type"] != "press.v1" || d["source"] != "gpio" {
		t.Errorf("press %v", press)
	}
	sub.Next(t, 0, "intercom/door/state", func(b []byte) bool { return decode(t, b)["state"] == "ringing" })
	v, _ := sub.Next(t, 0, "intercom/door/last_visitor", func(b []byte) bool { return decode(t, b)["ended_at"] != nil })
	last := decode(t, v.Payload)
	if last["outcome"] != "answered" || last["answered_by"] != string(alice) || last["door_opened"] != true ||
		last["door_opened_by"] != string(alice) || last["path"] != "classic" || !v.Retain {
		t.Errorf("last visitor %s (retained %v)", v.Payload, v.Retain)
	}

	// A missed visitor replaces it.
	at2 := at.Add(time.Minute)
	p.Observe(device.Event{Kind: "ring", Time: at2, Data: device.RingEvent{Ring: 2, RangAt: at2, Paths: []string{"classic"}}})
	p.Observe(device.Event{Kind: "call", Time: at2, Data: device.CallEvent{Ring: 2, RangAt: at2, Outcome: device.OutcomeMissed}})
	v, _ = sub.Next(t, 0, "intercom/door/last_visitor", func(b []byte) bool { return decode(t, b)["outcome"] == "missed" })
	if last := decode(t, v.Payload); last["door_opened"] != false || last["answered_by"] != nil {
		t.Errorf("missed visitor %s", v.Payload)
	}
	if st := p.Status(); st.Published == 0 || st.Dropped[DropQueueFull]+st.Dropped[DropStale]+st.Dropped[DropRefused] != 0 {
		t.Errorf("status %+v", st)
	}
}

// TestLastWill: when the intercom's connection dies without a goodbye,
// the broker publishes availability offline; when it is back, online
// again. A clean stop says offline too.
func TestLastWill(t *testing.T) {
	b := mosquitto.Start(t, mosquitto.Options{})
	relay := newCutter(t, strings.TrimPrefix(b.URL, "mqtt://"))
	ctx, cancel := context.WithCancel(t.Context())
	p, err := New(Config{Broker: relay.URL(), ClientID: "intercom-will", Prefix: "intercom/door", Node: "door",
		Backoff: runloop.Backoff{Base: 20 * time.Millisecond, Max: 100 * time.Millisecond}})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	stopped := false
	defer func() {
		if !stopped {
			cancel()
			<-done
		}
	}()
	sub := mosquitto.Subscribe(t, b.URL, "", "")
	_, i := sub.Next(t, 0, "intercom/door/availability", func(b []byte) bool { return string(b) == "online" })

	relay.cut(true)
	_, i = sub.Next(t, i+1, "intercom/door/availability", func(b []byte) bool { return string(b) == "offline" })
	relay.cut(false)
	_, i = sub.Next(t, i+1, "intercom/door/availability", func(b []byte) bool { return string(b) == "online" })
	waitConnected(t, p)

	cancel()
	stopped = true
	if err := <-done; err != nil {
		t.Errorf("Run: %v", err)
	}
	sub.Next(t, i+1, "intercom/door/availability", func(b []byte) bool { return string(b) == "offline" })
}

// TestBrokerRestart: a broker that restarts without persistence has
// forgotten every retained message; the intercom publishes them all
// again, and events observed while it was away arrive once it is back.
// Observe never waits meanwhile.
func TestBrokerRestart(t *testing.T) {
	b := mosquitto.Start(t, mosquitto.Options{})
	p := start(t, Config{Broker: b.URL, DiscoveryPrefix: "homeassistant"})
	waitConnected(t, p)
	at := time.Now()
	p.Observe(device.Event{Kind: "status", Data: device.Status{State: callengine.PhaseInCall, Since: at}})
	early := mosquitto.Subscribe(t, b.URL, "", "")
	p.Observe(device.Event{Kind: "ring", Time: at, Data: device.RingEvent{Ring: 7, RangAt: at}})
	mustMessage(t, early, "intercom/door/event/ring") // nothing in flight

	b.Kill()
	deadline := time.Now().Add(10 * time.Second)
	for p.Status().Connected && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if p.Status().Connected {
		t.Fatal("still connected to a killed broker")
	}
	// While the broker is away: presses go on, never blocked.
	began := time.Now()
	for range 3 {
		p.Observe(device.Event{Kind: "press", Type: "press.v1", Time: time.Now(), Data: device.PressEvent{Source: "gpio", Time: time.Now()}})
	}
	// A publish waiting on the dead connection would take seconds
	// (ConnectTimeout, publishTimeout); the bound leaves room for a
	// loaded machine under -race (a real broker: no fake clock here).
	if took := time.Since(began); took > time.Second {
		t.Errorf("Observe took %v with the broker away", took)
	}
	if st := p.Status(); st.Queued != 3 {
		t.Errorf("queued %d, want 3", st.Queued)
	}

	b.Restart()
	sub := mosquitto.Subscribe(t, b.URL, "", "")
	for _, topic := range []string{"homeassistant/event/door/doorbell/config", "homeassistant/sensor/door/last_visitor/config",
		"intercom/door/availability", "intercom/door/state", "intercom/door/last_visitor"} {
		sub.Next(t, 0, topic, nil)
	}
	if st := decode(t, mustMessage(t, sub, "intercom/door/state").Payload); st["state"] != "in_call" {
		t.Errorf("state after the restart %v", st)
	}
	if v := decode(t, mustMessage(t, sub, "intercom/door/last_visitor").Payload); v["ring"] != float64(7) {
		t.Errorf("last visitor after the restart %v", v)
	}
	// The subscriber may have come up after the queued presses went out;
	// a second subscriber is no help either: events are not retained. So
	// count them at the publisher: all three sent, none dropped.
	deadline = time.Now().Add(10 * time.Second)
	for p.Status().Queued != 0 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if st := p.Status(); st.Queued != 0 || st.Dropped[DropQueueFull] != 0 || st.Dropped[DropStale] != 0 || !st.Connected || st.LastError != "" {
		t.Errorf("after the restart: %+v", st)
	}
}

// TestQueueBoundedAndStale: with the broker away the queue keeps the
// newest QueueSize events and counts the rest; events older than MaxAge
// when the broker comes back are dropped as stale, not sent late.
func TestQueueBoundedAndStale(t *testing.T) {
	b := mosquitto.Start(t, mosquitto.Options{})
	b.Stop()
	p := start(t, Config{Broker: b.URL, QueueSize: 4, MaxAge: 200 * time.Millisecond})
	for i := range 10 {
		p.Observe(device.Event{Kind: "press", Time: time.Now(), Data: device.PressEvent{Source: "api", Time: time.Unix(int64(i), 0)}})
	}
	if st := p.Status(); st.Queued != 4 || st.Dropped[DropQueueFull] != 6 {
		t.Fatalf("queued %d dropped %v", st.Queued, st.Dropped)
	}
	time.Sleep(300 * time.Millisecond)
	b.Restart()
	waitConnected(t, p)
	deadline := time.Now().Add(10 * time.Second)
	for p.Status().Dropped[DropStale] != 4 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if st := p.Status(); st.Dropped[DropStale] != 4 || st.Queued != 0 {
		t.Errorf("after the outage: %+v", st)
	}
}

// TestWrongPassword: a refused login is a clear error in the status,
// retried with backoff, never a crash; the right password connects.
func TestWrongPassword(t *testing.T) {
	b := mosquitto.Start(t, mosquitto.Options{Users: map[string]string{"door": "right-password"}})
	p := start(t, Config{Broker: b.URL, Username: "door", Password: "wrong-password"})
	deadline := time.Now().Add(10 * time.Second)
	for p.Status().LastError == "" && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	st := p.Status()
	if st.Connected || !strings.Contains(st.LastError, "refused the connection") ||
		!strings.Contains(st.LastError, "mqtt.password_file") || strings.Contains(st.LastError, "wrong-password") {
		t.Errorf("status with a wrong password: %+v", st)
	}
	t.Logf("status: %s", st.LastError)

	ok := start(t, Config{Broker: b.URL, Username: "door", Password: "right-password", ClientID: "intercom-right"})
	waitConnected(t, ok)
	if st := ok.Status(); st.LastError != "" {
		t.Errorf("right password: %+v", st)
	}
}

// TestTLSWithCAFile: mqtts:// with the CA file the broker's certificate
// chains to; without it (the system's CAs) the connection is refused and
// the status says why.
func TestTLSWithCAFile(t *testing.T) {
	b := mosquitto.Start(t, mosquitto.Options{TLS: true})
	p := start(t, Config{Broker: b.TLSURL, CAFile: b.CAFile})
	waitConnected(t, p)
	sub := mosquitto.Subscribe(t, b.URL, "", "")
	mustMessage(t, sub, "intercom/door/availability")

	bad := start(t, Config{Broker: b.TLSURL, ClientID: "intercom-no-ca"})
	deadline := time.Now().Add(10 * time.Second)
	for bad.Status().LastError == "" && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if st := bad.Status(); st.Connected || !strings.Contains(st.LastError, "certificate") {
		t.Errorf("without the CA: %+v", st)
	}
	if _, err := New(Config{Broker: b.TLSURL, CAFile: b.CAFile + ".missing"}); err == nil {
		t.Error("missing CA file accepted")
	}
}

// TestRunStopsEverything: when Run returns, the client's goroutines
// (its connection manager, reader, keep-alive) have stopped too.
func TestRunStopsEverything(t *testing.T) {
	b := mosquitto.Start(t, mosquitto.Options{})
	before := runtime.NumGoroutine()
	p, err := New(Config{Broker: b.URL, ClientID: "intercom-leak", Prefix: "intercom/door", Node: "door", DiscoveryPrefix: "homeassistant"})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	waitConnected(t, p)
	p.Observe(device.Event{Kind: "press", Time: time.Now(), Data: device.PressEvent{Source: "api"}})
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(2 * time.Second)
	for runtime.NumGoroutine() > before && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if n := runtime.NumGoroutine(); n > before {
		buf := make([]byte, 1<<16)
		t.Errorf("%d goroutines after Run returned, %d before:\n%s", n, before, buf[:runtime.Stack(buf, true)])
	}
}

// TestRefusedByTheBrokersACL: a broker whose ACL lets the intercom write
// its own topics but not Home Assistant's discovery refuses those
// publishes (PUBACK reason 0x87); they are dropped and counted, said in
// the status, and the rest goes on.
func TestRefusedByTheBrokersACL(t *testing.T) {
	b := mosquitto.Start(t, mosquitto.Options{Users: map[string]string{"door": "door-password", "ha": "ha-password"},
		ACL: "user door\ntopic write intercom/#\n\nuser ha\ntopic read #\n"})
	p := start(t, Config{Broker: b.URL, Username: "door", Password: "door-password", DiscoveryPrefix: "homeassistant"})
	waitConnected(t, p)
	sub := mosquitto.Subscribe(t, b.URL, "ha", "ha-password")
	p.Observe(device.Event{Kind: "press", Type: "press.v1", Time: time.Now(), Data: device.PressEvent{Source: "gpio"}})
	sub.Next(t, 0, "intercom/door/event/press", nil)
	mustMessage(t, sub, "intercom/door/availability")
	st := p.Status()
	if st.Dropped[DropRefused] != uint64(len(p.Entities())) || !strings.Contains(st.LastError, "not authorized") ||
		!strings.Contains(st.LastError, "homeassistant/") {
		t.Errorf("status %+v", st)
	}
	for _, m := range sub.All() {
		if strings.HasPrefix(m.Topic, "homeassistant/") {
			t.Errorf("refused topic delivered: %s", m.Topic)
		}
	}
}
