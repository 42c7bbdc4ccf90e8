package mosquitto

import (
	"context"
	"net/url"
	"sync"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/autopaho"
	"github.com/eclipse/paho.golang/paho"
)

// Message is one message a Subscriber got.
type Message struct {
	Topic   string
	Payload []byte
	Retain  bool
	At      time.Time
}

// Subscriber is a client of the library the intercom uses (paho.golang,
// MQTT 5) subscribed to every topic,
// as Home Assistant's MQTT integration would be; it resubscribes after
// every reconnect. It asks for the retain flag as published (MQTT 5.0
// section 3.8.3.1), so live messages show whether they were retained.
type Subscriber struct {
	mu   sync.Mutex
	msgs []Message
	more chan struct{}
	cm   *autopaho.ConnectionManager
	subs int // subscriptions acknowledged
}

func Subscribe(t testing.TB, broker string, user, pass string) *Subscriber {
	t.Helper()
	u, err := url.Parse(broker)
	if err != nil {
		t.Fatal(err)
	}
	s := &Subscriber{more: make(chan struct{}, 1)}
	ctx, cancel := context.WithCancel(context.Background())
	cm, err := autopaho.NewConnection(ctx, autopaho.ClientConfig{
		ServerUrls: []*url.URL{u}, KeepAlive: 30, CleanStartOnInitialConnection: true,
		ConnectUsername: user, ConnectPassword: []byte(pass),
		ReconnectBackoff: func(int) time.Duration { return 20 * time.Millisecond },
		OnConnectionUp: func(cm *autopaho.ConnectionManager, _ *paho.Connack) {
			go func() {
				if _, err := cm.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: "#", QoS: 1, RetainAsPublished: true}}}); err == nil {
					s.mu.Lock()
					s.subs++
					s.mu.Unlock()
					s.signal()
				}
			}()
		},
		ClientConfig: paho.ClientConfig{
			ClientID: "test-Subscriber-" + t.Name(),
			OnPublishReceived: []func(paho.PublishReceived) (bool, error){func(pr paho.PublishReceived) (bool, error) {
				s.mu.Lock()
				s.msgs = append(s.msgs, Message{Topic: pr.Packet.Topic, Payload: append([]byte(nil), pr.Packet.Payload...),
					Retain: pr.Packet.Retain, At: time.Now()})
				s.mu.Unlock()
				s.signal()
				return true, nil
			}},
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	s.cm = cm
	t.Cleanup(func() {
		dctx, dcancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer dcancel()
		_ = cm.Disconnect(dctx)
		cancel()
	})
	s.WaitSubscribed(t, 1)
	return s
}

func (s *Subscriber) signal() {
	select {
	case s.more <- struct{}{}:
	default:
	}
}

// WaitSubscribed waits until n subscriptions (one per connection) were
// acknowledged.
func (s *Subscriber) WaitSubscribed(t testing.TB, n int) {
	t.Helper()
	s.waitFor(t, "subscription", func() bool { return s.subs >= n })
}

// waitFor waits until ok (called with s.mu held) holds, for 10 s at most.
func (s *Subscriber) waitFor(t testing.TB, what string, ok func() bool) {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		s.mu.Lock()
		done := ok()
		s.mu.Unlock()
		if done {
			return
		}
		select {
		case <-s.more:
		case <-time.After(50 * time.Millisecond):
		case <-deadline:
			s.mu.Lock()
			var topics []string
			for _, m := range s.msgs {
				topics = append(topics, m.Topic+"="+string(m.Payload))
			}
			s.mu.Unlock()
			t.Fatalf("no %s within 10 s; got %d messages: %q", what, len(topics), topics)
		}
	}
}

// Next waits for the first message on topic from index from on whose
// payload satisfies ok (nil: any), and returns it with its index.
func (s *Subscriber) Next(t testing.TB, from int, topic string, ok func([]byte) bool) (Message, int) {
	t.Helper()
	var got Message
	at := -1
	s.waitFor(t, "message on "+topic, func() bool {
		for i := from; i < len(s.msgs); i++ {
			if m := s.msgs[i]; m.Topic == topic && (ok == nil || ok(m.Payload)) {
				got, at = m, i
				return true
			}
		}
		return false
	})
	return got, at
}

// Count is how many messages arrived so far.
func (s *Subscriber) Count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.msgs)
}

// All returns a copy of the messages so far.
func (s *Subscriber) All() []Message {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Message(nil), s.msgs...)
}
