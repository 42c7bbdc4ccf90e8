package daemon

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/doorbell/intercom/callengine"
	"github.com/doorbell/intercom/callengine/ring"
	"github.com/doorbell/intercom/device"
	"github.com/doorbell/intercom/device/mqtt"
	"github.com/doorbell/intercom/gpio"
	"github.com/doorbell/intercom/internal/testenv/mosquitto"
	"github.com/doorbell/intercom/provisioning"
)

// mqttDoor is the real intercom, ring coordinator and door (a scripted
// classic path, a sim relay) publishing through the daemon's MQTT wiring.
type mqttDoor struct {
	intercom *device.Intercom
	door     *device.Door
	direct   *scriptLine
	home     *homeMQTT
	mets     *metrics
}

const mqttAlice = callengine.UserID("@alice:hs.test")

func startMQTTDoor(tb testing.TB, broker, user, password string) *mqttDoor {
	tb.Helper()
	d := &mqttDoor{direct: newScriptLine(callengine.CallStatus{CallID: "c1", Room: "!a:hs.test", Resident: mqttAlice, Direction: "outbound"})}
	coord := ring.NewCoordinator(ring.Config{Paths: []ring.PathLine{{Path: ring.Direct, Line: d.direct}}})
	relay, err := gpio.NewRelay(gpio.SimPin("RELAY"), gpio.ActiveHigh)
	if err != nil {
		tb.Fatal(err)
	}
	d.door, err = device.NewDoor(device.DoorOptions{Relay: relay,
		Policy: device.DoorConfig{Authorized: []callengine.UserID{mqttAlice}, Pulse: 50 * time.Millisecond}})
	if err != nil {
		tb.Fatal(err)
	}
	cfg := &provisioning.Config{
		Matrix: provisioning.Matrix{UserID: "@FrontDoor:hs.test", DeviceName: "Front door"},
		MQTT:   provisioning.MQTT{Broker: broker, Username: user, Password: password, Discovery: true, DiscoveryPrefix: "homeassistant"},
	}
	d.home, err = newHomeMQTT(cfg, "test", func() device.Status { return d.intercom.Status() }, slog.New(slog.DiscardHandler))
	if err != nil {
		tb.Fatal(err)
	}
	d.mets = newMetrics(metricSources{Call: func() callengine.Status { return d.intercom.CallStatus() }})
	d.home.register(d.mets)
	d.intercom = device.New(device.Config{Caller: coord, Relay: relay, Door: d.door, MQTT: d.home.reporter(),
		Residents: func() []callengine.Resident { return []callengine.Resident{{User: mqttAlice, Room: "!a:hs.test"}} },
		OnEvent:   d.home.observe(d.mets.observe)})
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for _, run := range []func(context.Context) error{coord.Run, d.door.Run, d.intercom.Run, d.home.run} {
		wg.Add(1)
		go func() { defer wg.Done(); _ = run(ctx) }()
	}
	tb.Cleanup(func() { cancel(); wg.Wait() })
	return d
}

func (d *mqttDoor) mqttStatus() mqtt.Status {
	st, _ := d.intercom.Status().MQTT.(mqtt.Status)
	return st
}

func jsonField(b []byte, path ...string) any {
	var v any
	if json.Unmarshal(b, &v) != nil {
		return nil
	}
	for _, k := range path {
		m, ok := v.(map[string]any)
		if !ok {
			return nil
		}
		v = m[k]
	}
	return v
}

func is(path string, want any) func([]byte) bool {
	return func(b []byte) bool { return jsonField(b, strings.Split(path, ".")...) == want }
}

// TestMQTTFollowsTheDoor scripts a visitor answered with the door
// opened, a missed one, and one during a broker outage through the real
// intercom and door, and reads what a Home Assistant-like subscriber
// gets: discovery, the events with their documented fields, the retained
// state; the door keeps ringing while the broker is away, and everything
// is back once it returns (without persistence, so it had forgotten
// every retained message). /metrics and /api/status show the publisher.
func TestMQTTFollowsTheDoor(t *testing.T) {
	b := mosquitto.Start(t, mosquitto.Options{})
	d := startMQTTDoor(t, b.URL, "", "")
	sub := mosquitto.Subscribe(t, b.URL, "", "")
	const pre = "intercom/frontdoor/"
	sub.Next(t, 0, "homeassistant/event/frontdoor/doorbell/config", is("device_class", "doorbell"))
	sub.Next(t, 0, pre+"availability", func(b []byte) bool { return string(b) == "online" })
	sub.Next(t, 0, pre+"state", is("state", "idle"))

	// 1: answered, the door opened during the call. Messages are
	// looked for from where each step began: retained state and events
	// may arrive in either order.
	i := sub.Count()
	d.intercom.Press("gpio")
	sub.Next(t, i, pre+"event/press", is("data.source", "gpio"))
	sub.Next(t, i, pre+"event/ring", is("type", "ring.v1"))
	sub.Next(t, i, pre+"state", is("state", "ringing"))
	d.direct.show(callengine.PhaseInCall, callengine.LegConnected, "")
	m, _ := sub.Next(t, i, pre+"event/call", is("data.outcome", "answered"))
	if jsonField(m.Payload, "data", "answered_by") != string(mqttAlice) || jsonField(m.Payload, "data", "path") != "classic" {
		t.Errorf("answer event %s", m.Payload)
	}
	sub.Next(t, i, pre+"event/call", is("data.outcome", "connected"))
	waitUntil(t, "the door to see the call", func() bool { return d.intercom.Status().State == callengine.PhaseInCall })
	now := time.Now()
	d.door.Handle(device.DoorRequest{EventID: "$a", Room: "!a:hs.test", Sender: mqttAlice, Text: "!open", Timestamp: now, ServerNow: now}, now)
	sub.Next(t, i, pre+"event/door", is("data.verdict", "open"))
	sub.Next(t, i, pre+"event/relay", is("data.on", true))
	d.intercom.Hangup()
	sub.Next(t, i, pre+"event/call", is("data.outcome", "ended"))
	m, _ = sub.Next(t, i, pre+"last_visitor", func(b []byte) bool { return jsonField(b, "ended_at") != nil })
	if jsonField(m.Payload, "outcome") != "answered" || jsonField(m.Payload, "door_opened") != true || !m.Retain {
		t.Errorf("last visitor %s (retained %v)", m.Payload, m.Retain)
	}
	sub.Next(t, i, pre+"state", is("state", "idle"))

	// 2: missed.
	i = sub.Count()
	d.intercom.Press("api")
	sub.Next(t, i, pre+"event/ring", nil)
	d.direct.show(callengine.PhaseIdle, callengine.LegEnded, callengine.ReasonInviteTimeout)
	sub.Next(t, i, pre+"event/call", is("data.outcome", "missed"))
	sub.Next(t, i, pre+"last_visitor", is("outcome", "missed"))

	// 3: the broker dies; the door does not notice.
	b.Kill()
	waitUntil(t, "the publisher to see the broker gone", func() bool { return !d.mqttStatus().Connected })
	d.intercom.Press("gpio")
	waitUntil(t, "the ring during the outage", func() bool { return d.intercom.Status().State == callengine.PhaseRinging })
	d.direct.show(callengine.PhaseIdle, callengine.LegEnded, callengine.ReasonInviteTimeout)
	waitUntil(t, "the miss during the outage", func() bool { return d.intercom.Status().State == callengine.PhaseIdle })
	if st := d.mqttStatus(); st.Queued == 0 || st.LastError == "" {
		t.Errorf("status during the outage: %+v", st)
	}

	b.Restart()
	late := mosquitto.Subscribe(t, b.URL, "", "")
	late.Next(t, 0, "homeassistant/sensor/frontdoor/last_visitor/config", nil)
	late.Next(t, 0, pre+"availability", func(b []byte) bool { return string(b) == "online" })
	late.Next(t, 0, pre+"state", is("state", "idle"))
	late.Next(t, 0, pre+"last_visitor", func(b []byte) bool {
		return jsonField(b, "outcome") == "missed" && jsonField(b, "ring") == float64(3)
	})
	// The events of the outage went out once the broker was back; the
	// first subscriber, reconnected, may or may not have been subscribed
	// by then, so they are counted at the publisher.
	waitUntil(t, "the outage's events sent", func() bool { return d.mqttStatus().Queued == 0 && d.mqttStatus().Connected })

	srv := httptest.NewServer(d.mets.handler())
	defer srv.Close()
	fams := scrape(t, srv.URL)
	if v := gauge(fams, "intercom_mqtt_connected", "", ""); v != 1 {
		t.Errorf("intercom_mqtt_connected %v", v)
	}
	if v := gauge(fams, "intercom_mqtt_published_total", "", ""); v < 20 {
		t.Errorf("intercom_mqtt_published_total %v", v)
	}
	for _, r := range mqtt.DropReasons {
		if v := gauge(fams, "intercom_mqtt_dropped_total", "reason", r); v != 0 {
			t.Errorf("intercom_mqtt_dropped_total{reason=%q} %v", r, v)
		}
	}
}

// TestMQTTWrongPasswordInStatus: a refused login shows in /api/status's
// mqtt section, and the door goes on.
func TestMQTTWrongPasswordInStatus(t *testing.T) {
	b := mosquitto.Start(t, mosquitto.Options{Users: map[string]string{"door": "the-right-one"}})
	d := startMQTTDoor(t, b.URL, "door", "not-the-password")
	waitUntil(t, "the refusal", func() bool { return d.mqttStatus().LastError != "" })
	srv := httptest.NewServer(d.intercom.Handler())
	defer srv.Close()
	resp, err := srv.Client().Get(srv.URL + "/api/status")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var doc struct {
		MQTT mqtt.Status `json:"mqtt"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&doc); err != nil {
		t.Fatal(err)
	}
	if doc.MQTT.Connected || !strings.Contains(doc.MQTT.LastError, "refused the connection") || strings.Contains(doc.MQTT.LastError, "not-the-password") {
		t.Errorf("mqtt status %+v", doc.MQTT)
	}
	d.intercom.Press("api")
	waitUntil(t, "the ring", func() bool { return d.intercom.Status().State == callengine.PhaseRinging })
}

// BenchmarkPressToMQTT: a press taken by the intercom → its press event
// at a subscriber of the broker, both on loopback with a real mosquitto.
// From just before device.Intercom.Press to the subscriber's client
// handing the PUBLISH to its callback. Each press is then ended as
// missed, so the next one rings afresh.
func BenchmarkPressToMQTT(b *testing.B) {
	broker := mosquitto.Start(b, mosquitto.Options{})
	d := startMQTTDoor(b, broker.URL, "", "")
	sub := mosquitto.Subscribe(b, broker.URL, "", "")
	const pre = "intercom/frontdoor/"
	_, i := sub.Next(b, 0, pre+"state", is("state", "idle"))
	var ms []float64
	b.ResetTimer()
	for range b.N {
		began := time.Now()
		d.intercom.Press("api")
		m, j := sub.Next(b, i, pre+"event/press", nil)
		ms = append(ms, float64(m.At.Sub(began).Microseconds())/1000)
		sub.Next(b, j, pre+"event/ring", nil)
		d.direct.show(callengine.PhaseIdle, callengine.LegEnded, callengine.ReasonInviteTimeout)
		_, i = sub.Next(b, j, pre+"event/call", is("data.outcome", "missed"))
		for deadline := time.Now().Add(5 * time.Second); d.intercom.Status().State != callengine.PhaseIdle; {
			if time.Now().After(deadline) {
				b.Fatal("the ring did not end")
			}
			time.Sleep(time.Millisecond)
		}
	}
	b.StopTimer()
	slices.Sort(ms)
	b.Logf("press → MQTT message at the subscriber, %d presses: median %.2f ms, min %.2f, max %.2f", len(ms), ms[len(ms)/2], ms[0], ms[len(ms)-1])
	b.ReportMetric(ms[len(ms)/2], "press-to-mqtt-ms")
	b.ReportMetric(ms[0], "min-ms")
	b.ReportMetric(ms[len(ms)-1], "max-ms")
	b.ReportMetric(0, "ns/op")
}

// TestReloadSaysMQTTNeedsARestart: the publisher is built at start, so a
// reload that changes mqtt: is logged as needing a restart.
func TestReloadSaysMQTTNeedsARestart(t *testing.T) {
	old := &provisioning.Config{MQTT: provisioning.MQTT{Broker: "mqtt://127.0.0.1:1883"}}
	next := &provisioning.Config{MQTT: provisioning.MQTT{Broker: "mqtts://ha.home:8883"}}
	if got := restartOnly(old, next); !slices.Equal(got, []string{"MQTT"}) {
		t.Errorf("restart-only sections %v, want [MQTT]", got)
	}
}
