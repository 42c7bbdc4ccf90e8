package e2e

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/doorbell/intercom/internal/testenv/mosquitto"
)

// TestMQTTFromTheBinary: the intercom binary with mqtt: configured and no
// homeserver at all (the door works without one) publishes discovery and
// availability to a real mosquitto, a press through the API arrives as
// its event, and when the process is killed (no goodbye) the broker
// publishes its last will: availability offline.
func TestMQTTFromTheBinary(t *testing.T) {
	bin, err := buildIntercom()
	if err != nil {
		t.Fatal(err)
	}
	b := mosquitto.Start(t, mosquitto.Options{Users: map[string]string{"door": "mqtt-password-1"}})
	dir := t.TempDir()
	for name, content := range map[string]string{"password": "matrix-password\n", "mqtt-password": "mqtt-password-1\n"} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	api := freeAddr(t)
	cfg := fmt.Sprintf(`matrix:
  homeserver: http://%s
  user_id: "@door:hs.test"
  password_file: password
  device_name: Front door
state_dir: state
residents: ["@alice:hs.test"]
ring:
  timeout: 10s
api:
  listen: %s
mqtt:
  broker: %s
  username: door
  password_file: mqtt-password
`, freeAddr(t), api, b.URL)
	path := filepath.Join(dir, "intercom.yaml")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	log := &lockedBuffer{}
	cmd := exec.Command(bin, "run", "--config", path)
	cmd.Env = append(os.Environ(), "INTERCOM_ICE_LOOPBACK=1")
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Kill()
			<-done
		}
		if t.Failed() {
			t.Logf("intercom log:\n%s", log.String())
		}
	})

	sub := mosquitto.Subscribe(t, b.URL, "door", "mqtt-password-1")
	sub.Next(t, 0, "homeassistant/event/door/doorbell/config", nil)
	_, i := sub.Next(t, 0, "intercom/door/availability", func(p []byte) bool { return string(p) == "online" })

	resp, err := http.Post("http://"+api+"/api/ring", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	m, _ := sub.Next(t, 0, "intercom/door/event/press", nil)
	var ev struct {
		Kind, Type string
		Data       struct{ Source string }
	}
	if err := json.Unmarshal(m.Payload, &ev); err != nil || ev.Type != "press.v1" || ev.Data.Source != "api" {
		t.Errorf("press event %s: %v", m.Payload, err)
	}
	// Nobody can be rung without a homeserver: the visitor is failed.
	sub.Next(t, 0, "intercom/door/last_visitor", func(p []byte) bool { return strings.Contains(string(p), `"outcome":"failed"`) })

	resp, err = http.Get("http://" + api + "/api/status")
	if err != nil {
		t.Fatal(err)
	}
	var st struct {
		MQTT struct {
			Connected bool   `json:"connected"`
			Broker    string `json:"broker"`
		} `json:"mqtt"`
	}
	err = json.NewDecoder(resp.Body).Decode(&st)
	resp.Body.Close()
	if err != nil || !st.MQTT.Connected || st.MQTT.Broker != b.URL {
		t.Errorf("status mqtt %+v: %v", st.MQTT, err)
	}

	killed := time.Now()
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	<-done
	sub.Next(t, i+1, "intercom/door/availability", func(p []byte) bool { return string(p) == "offline" })
	t.Logf("SIGKILL → availability offline at the subscriber: %v", time.Since(killed))
	if strings.Contains(log.String(), "mqtt-password-1") {
		t.Error("the MQTT password is in the log")
	}
}
