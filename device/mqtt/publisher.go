// Package mqtt publishes the door's events and state to an MQTT broker
// for home automation, with Home Assistant discovery, over Eclipse Paho's
// MQTT 5 client (github.com/eclipse/paho.golang, autopaho). It follows
// the same typed events as /api/events and /metrics
// (device.Config.OnEvent) and only publishes: it subscribes to nothing,
// so no MQTT message can ring, hang up or open the door.
//
// The door never waits on the broker: Observe only appends to a bounded
// queue; one loop (Run) sends, and the client's own goroutine reconnects
// with backoff. Both stop with Run's context.
package mqtt

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/url"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/eclipse/paho.golang/autopaho"
	"github.com/eclipse/paho.golang/paho"

	"github.com/doorbell/intercom/device"
	"github.com/doorbell/intercom/internal/runloop"
)

// Config says where and what to publish.
type Config struct {
	// Broker is mqtt://host[:port] or mqtts://host[:port].
	Broker string
	// Username and Password log in; both may be empty.
	Username, Password string
	// CAFile, for mqtts://, is the PEM file of the CA the broker's
	// certificate must chain to; empty: the system's CAs.
	CAFile string
	// ClientID is the MQTT client identifier.
	ClientID string
	// Prefix is the topic prefix (intercom/<slug>); Node names the
	// intercom in Home Assistant's unique IDs (the slug).
	Prefix, Node string
	// DiscoveryPrefix, unless empty, is where the Home Assistant
	// discovery configs go (homeassistant); empty: no discovery.
	DiscoveryPrefix string
	Device          DeviceInfo

	// Status is the door's status document, read once when Run starts
	// for the state topic; may be nil (idle until the first status
	// event).
	Status func() device.Status

	// QueueSize bounds the events waiting for the broker (default
	// DefaultQueueSize); MaxAge drops events that waited longer (default
	// DefaultMaxAge). The retained state is never dropped: only its
	// latest value is kept.
	QueueSize int
	MaxAge    time.Duration
	// Backoff spaces out reconnects (default 1 s doubling up to 60 s,
	// jittered).
	Backoff runloop.Backoff
	// KeepAlive is the MQTT keep-alive (default 30 s): the broker
	// publishes the last will 1.5 keep-alives after the intercom went
	// silent without closing its connection.
	KeepAlive time.Duration

	Logger *slog.Logger
}

// Defaults of Config.
const (
	DefaultQueueSize = 64
	DefaultMaxAge    = time.Minute
	DefaultKeepAlive = 30 * time.Second
	// publishTimeout bounds one publish's wait for the broker's PUBACK.
	publishTimeout = 10 * time.Second
	// retryAfter is the wait before sending again after a publish failed
	// on a connection the client still thinks is up.
	retryAfter = time.Second
)

// Reasons a message was dropped, the label values of
// intercom_mqtt_dropped_total.
const (
	DropQueueFull = "queue_full" // the queue was full: the oldest event went
	DropStale     = "stale"      // the event waited longer than MaxAge
	DropRefused   = "refused"    // the broker refused it (PUBACK reason ≥ 0x80)
)

// DropReasons lists every drop reason.
var DropReasons = []string{DropQueueFull, DropStale, DropRefused}

// Publisher sends the door's events and state to one broker.
type Publisher struct {
	cfg      Config
	log      *slog.Logger
	broker   *url.URL
	tls      *tls.Config
	entities []Entity
	wake     chan struct{}

	mu       sync.Mutex
	events   []message // FIFO, at most cfg.QueueSize
	retained map[string][]byte
	order    []string        // retained topics in the order they are sent
	dirty    map[string]bool // retained topics the broker has not acknowledged
	visitor  visitorTracker
	up       bool // the client's connection is up
	// conn ends when the connection goes down: a publish in flight then
	// fails at once instead of waiting out publishTimeout for an ack
	// that cannot come.
	conn      context.Context
	connEnd   context.CancelFunc
	since     time.Time
	lastErr   string
	lastErrAt time.Time

	published atomic.Uint64
	dropped   [3]atomic.Uint64 // by DropReasons' index
}

// message is one event waiting to be sent.
type message struct {
	topic   string
	payload []byte
	at      time.Time
}

// New checks cfg and reads the CA file; nothing connects until Run.
func New(cfg Config) (*Publisher, error) {
	u, err := url.Parse(cfg.Broker)
	if err != nil || u.Host == "" || (u.Scheme != "mqtt" && u.Scheme != "mqtts") {
		return nil, fmt.Errorf("mqtt: broker %q: %w", cfg.Broker, ErrBrokerURL)
	}
	if u.Port() == "" {
		port := "1883" // IANA's MQTT ports
		if u.Scheme == "mqtts" {
			port = "8883"
		}
		u.Host = u.Hostname() + ":" + port
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.QueueSize <= 0 {
		cfg.QueueSize = DefaultQueueSize
	}
	if cfg.MaxAge <= 0 {
		cfg.MaxAge = DefaultMaxAge
	}
	if cfg.KeepAlive <= 0 {
		cfg.KeepAlive = DefaultKeepAlive
	}
	if cfg.Backoff.Base <= 0 {
		cfg.Backoff = runloop.Backoff{Base: time.Second, Max: time.Minute, Jitter: rand.Int64N}
	}
	p := &Publisher{cfg: cfg, log: cfg.Logger, broker: u, wake: make(chan struct{}, 1),
		retained: map[string][]byte{}, dirty: map[string]bool{}}
	if u.Scheme == "mqtts" {
		p.tls = &tls.Config{MinVersion: tls.VersionTLS12, ServerName: u.Hostname()}
		if cfg.CAFile != "" {
			pem, err := os.ReadFile(cfg.CAFile)
			if err != nil {
				return nil, fmt.Errorf("mqtt: read CA file: %w", err)
			}
			pool := x509.NewCertPool()
			if !pool.AppendCertsFromPEM(pem) {
				return nil, fmt.Errorf("mqtt: CA file %s: %w", cfg.CAFile, ErrNoCertificates)
			}
			p.tls.RootCAs = pool
		}
	}
	// The order the retained topics go out after a connect: discovery
	// first, so Home Assistant knows the entities before their state;
	// then availability, which makes them available.
	if cfg.DiscoveryPrefix != "" {
		p.entities = entities(cfg.DiscoveryPrefix, cfg.Prefix, cfg.Node, cfg.Device)
		for _, e := range p.entities {
			p.setRetained(e.Topic, e.payload())
		}
	}
	p.setRetained(p.topic(topicAvailability), []byte(online))
	p.setRetained(p.topic(topicState), mustJSON(State{State: "idle", Since: time.Now()}))
	return p, nil
}

// Entities are the Home Assistant discovery configs published (none
// without discovery).
func (p *Publisher) Entities() []Entity { return p.entities }

func (p *Publisher) topic(name string) string { return p.cfg.Prefix + "/" + name }

// setRetained records the latest payload of a retained topic; the caller
// holds p.mu (or owns p, in New).
func (p *Publisher) setRetained(topic string, payload []byte) {
	if _, ok := p.retained[topic]; !ok {
		p.order = append(p.order, topic)
	}
	p.retained[topic] = payload
	p.dirty[topic] = true
}

// Observe takes one event of the door (device.Config.OnEvent). It never
// blocks: it updates the retained state, queues the event (dropping the
// oldest when the queue is full) and wakes Run.
func (p *Publisher) Observe(ev device.Event) {
	var payload []byte
	if ev.Kind != "status" {
		// The SSE stream's data line: the same JSON, the same fields.
		b, err := json.Marshal(ev)
		if err != nil {
			p.log.Warn("mqtt: encode event", "kind", ev.Kind, "err", err)
			return
		}
		payload = b
	}
	p.mu.Lock()
	switch ev.Kind {
	case "status":
		if st, ok := ev.Data.(device.Status); ok {
			b := mustJSON(stateOf(st))
			if string(b) != string(p.retained[p.topic(topicState)]) {
				p.setRetained(p.topic(topicState), b)
			}
		}
	default:
		if p.visitor.observe(ev) {
			p.setRetained(p.topic(topicLastVisitor), mustJSON(p.visitor.v))
		}
		if len(p.events) >= p.cfg.QueueSize {
			p.events = p.events[1:]
			p.dropped[0].Add(1)
		}
		p.events = append(p.events, message{topic: p.topic(topicEvent + ev.Kind), payload: payload, at: time.Now()})
	}
	p.mu.Unlock()
	p.poke()
}

func (p *Publisher) poke() {
	select {
	case p.wake <- struct{}{}:
	default:
	}
}

// Run connects and publishes until ctx ends, then disconnects asking the
// broker to publish the last will (availability offline). It returns nil
// when ctx ends; the broker being away is no error, only a status.
func (p *Publisher) Run(ctx context.Context) error {
	// The client's context outlives ctx by the disconnect: Run cancels
	// it itself, and waits for the client's goroutines, before it
	// returns.
	cctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	defer cancel()
	if p.cfg.Status != nil {
		b := mustJSON(stateOf(p.cfg.Status()))
		p.mu.Lock()
		p.setRetained(p.topic(topicState), b)
		p.mu.Unlock()
	}
	backoff := p.cfg.Backoff
	cm, err := autopaho.NewConnection(cctx, autopaho.ClientConfig{
		ServerUrls: []*url.URL{p.broker},
		TlsCfg:     p.tls,
		KeepAlive:  uint16(p.cfg.KeepAlive / time.Second),
		// Nothing is subscribed and every message is sent anew after a
		// reconnect, so no session needs to outlive a connection.
		CleanStartOnInitialConnection: true,
		ReconnectBackoff: func(attempt int) time.Duration {
			if attempt <= 0 {
				return 0
			}
			return backoff.Delay(attempt)
		},
		ConnectTimeout:  10 * time.Second,
		ConnectUsername: p.cfg.Username,
		ConnectPassword: []byte(p.cfg.Password),
		// MQTT 5.0 section 3.1.2.5: the broker publishes the will when
		// the connection ends without a DISCONNECT (a crash, a cut
		// cable, a power loss), and, at our shutdown, when asked to by
		// reason 0x04.
		WillMessage: &paho.WillMessage{Topic: p.topic(topicAvailability), Payload: []byte(offline), QoS: 1, Retain: true},
		OnConnectionUp: func(_ *autopaho.ConnectionManager, _ *paho.Connack) {
			p.connected(ctx, true)
		},
		OnConnectionDown: func() bool {
			p.connected(ctx, false)
			return true
		},
		OnConnectError: p.connectError,
		DisconnectPacketBuilder: func() *paho.Disconnect {
			// 0x04, Disconnect with Will Message (MQTT 5.0 section
			// 3.14.2.1): availability goes offline at a clean stop too.
			return &paho.Disconnect{ReasonCode: 0x04}
		},
		ClientConfig: paho.ClientConfig{ClientID: p.cfg.ClientID},
	})
	if err != nil {
		return fmt.Errorf("mqtt: start client: %w", err)
	}
	defer func() {
		dctx, dcancel := context.WithTimeout(cctx, 5*time.Second)
		defer dcancel()
		if err := cm.Disconnect(dctx); err != nil {
			p.log.Warn("mqtt: disconnect", "err", err)
		}
	}()
	p.log.Info("mqtt: publishing", "broker", p.broker.String(), "client_id", p.cfg.ClientID, "prefix", p.cfg.Prefix,
		"discovery", p.cfg.DiscoveryPrefix != "")
	retry := time.NewTimer(time.Hour)
	retry.Stop()
	defer retry.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-p.wake:
		case <-retry.C:
		}
		if !p.flush(ctx, cm) {
			retry.Reset(retryAfter)
		}
	}
}

// flush sends the retained topics the broker lacks, then the queued
// events, until nothing is left or a publish fails (false).
func (p *Publisher) flush(ctx context.Context, cm *autopaho.ConnectionManager) bool {
	for ctx.Err() == nil {
		m, retain, conn, ok := p.next()
		if !ok {
			return true
		}
		pctx, cancel := context.WithTimeout(conn, publishTimeout)
		resp, err := cm.Publish(pctx, &paho.Publish{Topic: m.topic, Payload: m.payload, QoS: 1, Retain: retain})
		cancel()
		switch {
		case err == nil:
			p.published.Add(1)
		case resp != nil && resp.ReasonCode >= 0x80:
			// The broker took the message and refused it (an ACL):
			// sending it again would be refused again.
			p.dropped[2].Add(1)
			p.setError(fmt.Sprintf("the broker refused a publish to %s: %s (MQTT reason 0x%02x)", m.topic, reasonText(resp.ReasonCode), resp.ReasonCode))
		default:
			p.unsent(m, retain)
			if ctx.Err() == nil {
				p.log.Debug("mqtt: publish failed; will retry", "topic", m.topic, "err", err)
			}
			return false
		}
	}
	return true
}

// next is the next message to send: a retained topic the broker lacks,
// else the oldest event that is not stale, with the connection's
// context. Nothing while disconnected.
func (p *Publisher) next() (m message, retain bool, conn context.Context, ok bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.up {
		return message{}, false, nil, false
	}
	for _, t := range p.order {
		if p.dirty[t] {
			delete(p.dirty, t)
			return message{topic: t, payload: p.retained[t]}, true, p.conn, true
		}
	}
	for len(p.events) > 0 {
		m := p.events[0]
		p.events = p.events[1:]
		if time.Since(m.at) > p.cfg.MaxAge {
			// An event from before an outage would fire automations
			// ("someone is at the door") long after the fact; the
			// retained state says what happened meanwhile.
			p.dropped[1].Add(1)
			continue
		}
		return m, false, p.conn, true
	}
	return message{}, false, nil, false
}

// unsent puts m back: a retained topic is sent again (unless a newer
// value is already waiting), an event goes back to the head of the
// queue, unless the queue filled meanwhile.
func (p *Publisher) unsent(m message, retain bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if retain {
		p.dirty[m.topic] = true
		return
	}
	if len(p.events) >= p.cfg.QueueSize {
		p.dropped[0].Add(1)
		return
	}
	p.events = append([]message{m}, p.events...)
}

// connected follows the client's connection. Every connect sends every
// retained topic again: the broker may have restarted and forgotten them.
func (p *Publisher) connected(ctx context.Context, up bool) {
	p.mu.Lock()
	p.up, p.since = up, time.Now()
	if p.connEnd != nil {
		p.connEnd()
	}
	p.conn, p.connEnd = nil, nil
	if up {
		p.conn, p.connEnd = context.WithCancel(ctx)
		for _, t := range p.order {
			p.dirty[t] = true
		}
		p.lastErr = ""
	}
	p.mu.Unlock()
	if up {
		p.log.Info("mqtt: connected", "broker", p.broker.String())
	} else {
		p.log.Warn("mqtt: connection lost; reconnecting", "broker", p.broker.String())
	}
	p.poke()
}

// connectError records why a connection attempt failed, in words an
// installer can act on.
func (p *Publisher) connectError(err error) {
	msg := fmt.Sprintf("cannot connect to %s: %v", p.broker.Redacted(), err)
	var ce *autopaho.ConnackError
	if errors.As(err, &ce) {
		msg = fmt.Sprintf("the broker %s refused the connection: %s (MQTT reason 0x%02x)", p.broker.Redacted(), reasonText(ce.ReasonCode), ce.ReasonCode)
		switch ce.ReasonCode {
		case 0x86, 0x87:
			msg += "; check mqtt.username and mqtt.password_file"
		case 0x85:
			msg += "; check mqtt.client_id"
		}
	}
	p.mu.Lock()
	repeated := msg == p.lastErr
	p.mu.Unlock()
	p.setError(msg)
	if repeated {
		p.log.Debug("mqtt: "+msg, "err", err)
	} else {
		p.log.Warn("mqtt: "+msg, "err", err)
	}
}

func (p *Publisher) setError(msg string) {
	p.mu.Lock()
	p.lastErr, p.lastErrAt = msg, time.Now()
	p.mu.Unlock()
}

// reasonText names the MQTT 5.0 reason codes (section 2.4) a CONNACK or
// PUBACK can refuse with.
func reasonText(code byte) string {
	switch code {
	case 0x80:
		return "unspecified error"
	case 0x81:
		return "malformed packet"
	case 0x82:
		return "protocol error"
	case 0x83:
		return "implementation specific error"
	case 0x84:
		return "unsupported protocol version"
	case 0x85:
		return "client identifier not valid"
	case 0x86:
		return "bad user name or password"
	case 0x87:
		return "not authorized"
	case 0x88:
		return "server unavailable"
	case 0x89:
		return "server busy"
	case 0x8A:
		return "banned"
	case 0x8C:
		return "bad authentication method"
	case 0x90:
		return "topic name invalid"
	case 0x97:
		return "quota exceeded"
	case 0x99:
		return "payload format invalid"
	case 0x9F:
		return "connection rate exceeded"
	}
	return "refused"
}

// Status is the mqtt section of /api/status.
type Status struct {
	Broker    string `json:"broker"`
	Connected bool   `json:"connected"`
	// Since is when the connection came up or went down.
	Since *time.Time `json:"since,omitempty"`
	// LastError says why the last connection attempt or publish failed;
	// cleared by a connect.
	LastError   string            `json:"last_error,omitempty"`
	LastErrorAt *time.Time        `json:"last_error_at,omitempty"`
	Published   uint64            `json:"published"`
	Queued      int               `json:"queued"`
	Dropped     map[string]uint64 `json:"dropped"`
}

// Status reports the connection and the counters.
func (p *Publisher) Status() Status {
	p.mu.Lock()
	s := Status{Broker: p.broker.Redacted(), Connected: p.up, LastError: p.lastErr, Queued: len(p.events)}
	if !p.since.IsZero() {
		since := p.since
		s.Since = &since
	}
	if !p.lastErrAt.IsZero() && p.lastErr != "" {
		at := p.lastErrAt
		s.LastErrorAt = &at
	}
	p.mu.Unlock()
	s.Published = p.published.Load()
	s.Dropped = p.Dropped()
	return s
}

// Dropped counts the messages dropped since start, by reason
// (DropReasons).
func (p *Publisher) Dropped() map[string]uint64 {
	out := make(map[string]uint64, len(DropReasons))
	for i, r := range DropReasons {
		out[r] = p.dropped[i].Load()
	}
	return out
}

// Healthy is always true: the broker being away never makes the door
// unhealthy (/healthz follows the Matrix side).
func (p *Publisher) Healthy() bool { return true }

// Report is Status, for the status document.
func (p *Publisher) Report() any { return p.Status() }

func mustJSON(v any) []byte {
	// Only this package's own structs, of strings, times and numbers:
	// encoding cannot fail.
	b, _ := json.Marshal(v)
	return b
}
