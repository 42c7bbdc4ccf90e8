package provisioning

import (
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"strings"
	"unicode/utf8"
)

// MQTT publishes the door's events and state to an MQTT broker for home
// automation (device/mqtt), with Home Assistant discovery. Off unless
// Broker is set. It is read at start only: a reload that changes it is
// logged as needing a restart (restartOnly sees the section).
type MQTT struct {
	// Broker is mqtt://host[:1883] or mqtts://host[:8883]; empty: off.
	Broker string
	// Username and PasswordFile log in to the broker; CAFile, for
	// mqtts://, is the CA (PEM) its certificate must chain to instead of
	// the system's.
	Username     string
	PasswordFile string
	CAFile       string
	// ClientID, TopicPrefix: empty means derived from the intercom's
	// Matrix user (MQTTClientID, MQTTTopicPrefix).
	ClientID    string
	TopicPrefix string
	// Discovery publishes Home Assistant discovery configs under
	// DiscoveryPrefix.
	Discovery       bool
	DiscoveryPrefix string

	Password string `yaml:"-" json:"-"` // from PasswordFile or EnvMQTTPassword
}

// EnvMQTTPassword may hold the broker's password instead of
// mqtt.password_file.
const EnvMQTTPassword = "INTERCOM_MQTT_PASSWORD"

// Enabled reports whether the intercom publishes to a broker.
func (m MQTT) Enabled() bool { return m.Broker != "" }

func init() {
	// The mqtt section's keys, after the others: example.yaml documents
	// them last but for log.
	schema = append(schema,
		optional("mqtt.broker", "", func(c *Config) *string { return &c.MQTT.Broker },
			str, mqttURL),
		optional("mqtt.username", "", func(c *Config) *string { return &c.MQTT.Username },
			str, maxLen(256)),
		optional("mqtt.password_file", "", func(c *Config) *string { return &c.MQTT.PasswordFile },
			path),
		optional("mqtt.ca_file", "", func(c *Config) *string { return &c.MQTT.CAFile },
			path),
		optional("mqtt.client_id", "", func(c *Config) *string { return &c.MQTT.ClientID },
			str, maxLen(128), mqttName("client ID")),
		optional("mqtt.topic_prefix", "", func(c *Config) *string { return &c.MQTT.TopicPrefix },
			str, maxLen(128), mqttTopic),
		optional("mqtt.discovery", true, func(c *Config) *bool { return &c.MQTT.Discovery },
			boolean),
		optional("mqtt.discovery_prefix", "homeassistant", func(c *Config) *string { return &c.MQTT.DiscoveryPrefix },
			str, nonEmpty, maxLen(128), mqttTopic),
	)
	secretFileKeys = append(secretFileKeys, "mqtt.password_file")
	crossChecks = append(crossChecks, checkMQTT)
	warnChecks = append(warnChecks, warnPlainMQTT)
}

// mqttURL accepts mqtt:// and mqtts:// URLs of a host, with an optional
// port, and nothing else: credentials belong in username and
// password_file, where they are never shown.
func mqttURL(s string) error {
	if s == "" {
		return nil
	}
	u, err := url.Parse(s)
	if err != nil || u.Host == "" || u.Hostname() == "" {
		return fmt.Errorf("%q must be a URL such as \"mqtts://broker.home:8883\" or \"mqtt://127.0.0.1:1883\"", s)
	}
	switch {
	case u.Scheme != "mqtt" && u.Scheme != "mqtts":
		return fmt.Errorf("%q must start with mqtt:// or mqtts:// (MQTT over TLS)", s)
	case u.User != nil:
		return errors.New("must not contain a user name or password; use mqtt.username and mqtt.password_file")
	case u.Path != "" && u.Path != "/", u.RawQuery != "", u.Fragment != "":
		return fmt.Errorf("%q must name only the broker's host and port", s)
	}
	return nil
}

// mqttTopic accepts a topic prefix: MQTT 5.0 section 4.7 forbids the
// wildcards + and # and the null character in a topic name; an empty
// level (a leading, trailing or doubled /) is allowed there but is a
// mistake here.
func mqttTopic(s string) error {
	if s == "" {
		return nil
	}
	if strings.ContainsAny(s, "+#\x00") || !utf8.ValidString(s) {
		return fmt.Errorf("%q must not contain + or # (MQTT wildcards)", s)
	}
	for _, l := range strings.Split(s, "/") {
		if l == "" {
			return fmt.Errorf("%q has an empty level; write levels separated by single slashes, without one at either end", s)
		}
	}
	return nil
}

// mqttName accepts printable ASCII without spaces: what every broker
// takes as a client ID.
func mqttName(what string) check[string] {
	return func(s string) error {
		if strings.IndexFunc(s, func(r rune) bool { return r < 0x21 || r > 0x7e }) >= 0 {
			return fmt.Errorf("the %s %q must be printable ASCII without spaces", what, s)
		}
		return nil
	}
}

// checkMQTT: the other mqtt keys mean nothing without a broker, a CA file
// only with TLS, a password only with a user name.
func checkMQTT(c *Config, at lineOf) []Problem {
	m := c.MQTT
	var ps []Problem
	bad := func(key, msg string) {
		ps = append(ps, Problem{File: c.Path, Line: max(at(key), at("mqtt"), 1), Key: key, Msg: msg})
	}
	if !m.Enabled() {
		for _, k := range []string{"mqtt.username", "mqtt.password_file", "mqtt.ca_file", "mqtt.client_id", "mqtt.topic_prefix"} {
			if at(k) > 0 {
				bad(k, "is set but mqtt.broker is not; set the broker or remove the mqtt section")
				break
			}
		}
		return ps
	}
	if m.CAFile != "" && !strings.HasPrefix(m.Broker, "mqtts://") {
		bad("mqtt.ca_file", "is only used with an mqtts:// broker")
	}
	if m.PasswordFile != "" && m.Username == "" {
		bad("mqtt.password_file", "needs mqtt.username")
	}
	return ps
}

// warnPlainMQTT: over plain MQTT the password and every event cross the
// network readable by anyone on the path.
func warnPlainMQTT(c *Config, at lineOf) []Problem {
	u, err := url.Parse(c.MQTT.Broker)
	if err != nil || u.Scheme != "mqtt" || loopbackHost(u.Hostname()) || (c.MQTT.Username == "" && c.MQTT.PasswordFile == "") {
		return nil
	}
	return []Problem{{File: c.Path, Line: max(at("mqtt.broker"), 1), Key: "mqtt.broker",
		Msg: fmt.Sprintf("%s is plain MQTT to another machine: the password and the door's events cross the network unencrypted; use mqtts://", c.MQTT.Broker)}}
}

// loadMQTTFiles reads mqtt.password_file (or EnvMQTTPassword), like the
// Matrix secrets, and checks that mqtt.ca_file can be read.
func (c *Config) loadMQTTFiles(lookupEnv func(string) (string, bool), probs *Problems) {
	c.MQTT.Password = ""
	if !c.MQTT.Enabled() {
		return
	}
	if c.MQTT.Username == "" {
		return
	}
	c.MQTT.Password, _ = c.secret("mqtt.password_file", c.MQTT.PasswordFile, EnvMQTTPassword, lookupEnv, probs)
	if c.MQTT.CAFile != "" {
		if _, err := os.Stat(c.MQTT.CAFile); err != nil {
			*probs = append(*probs, Problem{File: c.Path, Line: c.line("mqtt.ca_file"), Key: "mqtt.ca_file",
				Msg: fmt.Sprintf("cannot read %s: %v", c.MQTT.CAFile, errors.Unwrap(err))})
		}
	}
}

// MQTTSlug is the name the intercom goes by on the broker: the local part
// of its Matrix user ID, lower case, with anything but letters, digits,
// - and _ made _. It is unique per homeserver, so two intercoms of one
// household never share a topic or a Home Assistant device.
func (c *Config) MQTTSlug() string {
	local := strings.TrimPrefix(c.Matrix.UserID, "@")
	if i := strings.IndexByte(local, ':'); i >= 0 {
		local = local[:i]
	}
	var b strings.Builder
	for _, r := range strings.ToLower(local) {
		if r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-' || r == '_' {
			b.WriteRune(r)
		} else {
			b.WriteByte('_')
		}
	}
	if b.Len() == 0 {
		return "intercom"
	}
	return b.String()
}

// MQTTClientID is mqtt.client_id, default "intercom-<slug>".
func (c *Config) MQTTClientID() string {
	if c.MQTT.ClientID != "" {
		return c.MQTT.ClientID
	}
	return "intercom-" + c.MQTTSlug()
}

// MQTTTopicPrefix is mqtt.topic_prefix, default "intercom/<slug>".
func (c *Config) MQTTTopicPrefix() string {
	if c.MQTT.TopicPrefix != "" {
		return c.MQTT.TopicPrefix
	}
	return "intercom/" + c.MQTTSlug()
}

// DescribeMQTT says in one line what the intercom publishes where, for
// check-config; never the password.
func (c *Config) DescribeMQTT() string {
	m := c.MQTT
	if !m.Enabled() {
		return "mqtt: off (no mqtt.broker)"
	}
	var b strings.Builder
	fmt.Fprintf(&b, "mqtt: publishing to %s as client %q", m.Broker, c.MQTTClientID())
	switch {
	case m.Username != "" && m.Password != "":
		fmt.Fprintf(&b, ", user %q with a password", m.Username)
	case m.Username != "":
		fmt.Fprintf(&b, ", user %q without a password", m.Username)
	default:
		b.WriteString(", anonymous")
	}
	if strings.HasPrefix(m.Broker, "mqtts://") {
		if m.CAFile != "" {
			fmt.Fprintf(&b, ", TLS with the CA in %s", m.CAFile)
		} else {
			b.WriteString(", TLS with the system's CAs")
		}
	}
	fmt.Fprintf(&b, "; topics %s/…", c.MQTTTopicPrefix())
	if m.Discovery {
		fmt.Fprintf(&b, "; Home Assistant discovery under %s/", m.DiscoveryPrefix)
	} else {
		b.WriteString("; no Home Assistant discovery")
	}
	b.WriteString("; publish only, nothing on MQTT opens the door")
	return b.String()
}

// plainMQTT has MQTT's fields without its methods, for formatting.
type plainMQTT MQTT

// String formats m with the password redacted.
func (m MQTT) String() string {
	m.Password = redact(m.Password)
	return fmt.Sprintf("%+v", plainMQTT(m))
}

// GoString is String, so that %#v does not print the password either.
func (m MQTT) GoString() string { return "provisioning.MQTT" + m.String() }

// LogValue implements slog.LogValuer.
func (m MQTT) LogValue() slog.Value {
	return slog.GroupValue(
		slog.String("broker", m.Broker),
		slog.String("username", m.Username),
		slog.String("password_file", m.PasswordFile),
		slog.String("password", redact(m.Password)),
		slog.String("ca_file", m.CAFile),
		slog.String("client_id", m.ClientID),
		slog.String("topic_prefix", m.TopicPrefix),
		slog.Bool("discovery", m.Discovery),
		slog.String("discovery_prefix", m.DiscoveryPrefix),
	)
}
