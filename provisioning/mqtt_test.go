package provisioning

import (
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"
)

func TestMQTTKeys(t *testing.T) {
	for _, c := range []struct {
		yaml, problem string
	}{
		{"", ""},
		{"mqtt:\n  broker: mqtt://127.0.0.1:1883\n", ""},
		{"mqtt:\n  broker: mqtts://ha.home:8883\n  username: door\n  password_file: /pw\n  ca_file: /ca.pem\n", ""},
		{"mqtt:\n  broker: http://ha.home\n", "mqtt:// or mqtts://"},
		{"mqtt:\n  broker: \"mqtt://door:pw@ha.home\"\n", "user name or password"},
		{"mqtt:\n  broker: mqtt://ha.home/some/path\n", "only the broker's host"},
		{"mqtt:\n  broker: ha.home\n", "must be a URL"},
		{"mqtt:\n  broker: mqtt://ha.home\n  ca_file: /ca.pem\n", "only used with an mqtts://"},
		{"mqtt:\n  broker: mqtt://ha.home\n  password_file: /pw\n", "needs mqtt.username"},
		{"mqtt:\n  username: door\n", "mqtt.broker is not"},
		{"mqtt:\n  broker: mqtt://ha.home\n  topic_prefix: door/#\n", "wildcards"},
		{"mqtt:\n  broker: mqtt://ha.home\n  topic_prefix: /door\n", "empty level"},
		{"mqtt:\n  broker: mqtt://ha.home\n  discovery_prefix: \"\"\n", "empty"},
		{"mqtt:\n  broker: mqtt://ha.home\n  client_id: front door\n", "without spaces"},
		{"mqtt:\n  brokr: mqtt://ha.home\n", `did you mean "broker"`},
	} {
		_, err := Parse("intercom.yaml", []byte(minimal+c.yaml), "/etc/intercom")
		switch {
		case c.problem == "" && err != nil:
			t.Errorf("%q: %v", c.yaml, err)
		case c.problem != "" && (err == nil || !strings.Contains(err.Error(), c.problem)):
			t.Errorf("%q: err %v, want %q", c.yaml, err, c.problem)
		}
	}
}

// TestMQTTDefaultsFromTheUser: the client ID and the topics default to
// the local part of the intercom's Matrix user, made topic-safe.
func TestMQTTDefaultsFromTheUser(t *testing.T) {
	for _, c := range []struct{ user, client, prefix string }{
		{"@intercom:example.org", "intercom-intercom", "intercom/intercom"},
		{"@Front.Door:example.org", "intercom-front_door", "intercom/front_door"},
		{"@door=2/b:example.org", "intercom-door_2_b", "intercom/door_2_b"},
	} {
		cfg := &Config{Matrix: Matrix{UserID: c.user}}
		if got := cfg.MQTTClientID(); got != c.client {
			t.Errorf("%s: client ID %q, want %q", c.user, got, c.client)
		}
		if got := cfg.MQTTTopicPrefix(); got != c.prefix {
			t.Errorf("%s: prefix %q, want %q", c.user, got, c.prefix)
		}
	}
	cfg := &Config{Matrix: Matrix{UserID: "@a:b"}, MQTT: MQTT{ClientID: "mine", TopicPrefix: "house/door"}}
	if cfg.MQTTClientID() != "mine" || cfg.MQTTTopicPrefix() != "house/door" {
		t.Errorf("set values not used: %q %q", cfg.MQTTClientID(), cfg.MQTTTopicPrefix())
	}
}

// TestMQTTPasswordNeverShown loads a password from its file and checks
// that no way of printing the configuration shows it, while check-config's
// line says what is configured.
func TestMQTTPasswordNeverShown(t *testing.T) {
	dir := t.TempDir()
	const secret = "mqtt-pass-do-not-print"
	writeFile(t, dir, "secrets/password", "matrix-password\n", 0o600)
	writeFile(t, dir, "mqtt-pw", secret+"\n", 0o600)
	ca := writeFile(t, dir, "ca.pem", "-----BEGIN CERTIFICATE-----\n", 0o644)
	path := writeFile(t, dir, "intercom.yaml", minimal+"mqtt:\n  broker: mqtts://ha.home:8883\n  username: door\n  password_file: mqtt-pw\n  ca_file: ca.pem\n", 0o600)
	cfg, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.MQTT.Password != secret || cfg.MQTT.CAFile != ca {
		t.Fatalf("password %q ca %q", cfg.MQTT.Password, cfg.MQTT.CAFile)
	}
	var logged strings.Builder
	slog.New(slog.NewTextHandler(&logged, nil)).Info("x", "config", cfg)
	for _, s := range []string{fmt.Sprint(cfg), fmt.Sprintf("%+v", *cfg), fmt.Sprintf("%#v", cfg.MQTT), logged.String(), cfg.DescribeMQTT()} {
		if strings.Contains(s, secret) {
			t.Errorf("password shown in %q", s)
		}
	}
	want := `mqtt: publishing to mqtts://ha.home:8883 as client "intercom-intercom", user "door" with a password, TLS with the CA in ` + ca +
		`; topics intercom/intercom/…; Home Assistant discovery under homeassistant/; publish only, nothing on MQTT opens the door`
	if got := cfg.DescribeMQTT(); got != want {
		t.Errorf("check-config line:\n got %s\nwant %s", got, want)
	}

	// A missing password file and CA file are problems at their lines.
	path = writeFile(t, dir, "bad.yaml", minimal+"mqtt:\n  broker: mqtts://ha.home:8883\n  username: door\n  password_file: nope\n  ca_file: nope.pem\n", 0o600)
	_, err = Load(path)
	if err == nil || !strings.Contains(err.Error(), filepath.Join(dir, "nope")+" does not exist") || !strings.Contains(err.Error(), "bad.yaml:11: mqtt.ca_file") {
		t.Errorf("missing files: %v", err)
	}
	// Plain MQTT with a password to another machine is allowed, with a warning.
	writeFile(t, dir, "plain.yaml", minimal+"mqtt:\n  broker: mqtt://ha.home\n  username: door\n  password_file: mqtt-pw\n", 0o600)
	cfg, err = Load(filepath.Join(dir, "plain.yaml"))
	if err != nil || len(cfg.Warnings) != 1 || !strings.Contains(cfg.Warnings[0].Msg, "unencrypted") {
		t.Errorf("plain MQTT: %v %v", err, cfg.Warnings)
	}
}
