package mqtt

import (
	"context"
	"io"
	"net"
	"net/url"
	"sync"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/autopaho"
	"github.com/eclipse/paho.golang/paho"
)

// received is one message a test subscriber got.
type received struct {
	Topic   string
	Payload []byte
	Retain  bool
	At      time.Time
}

// subscriber is a client of the same library subscribed to every topic,
// as Home Assistant's MQTT integration would be; it resubscribes after
// every reconnect. It asks for the retain flag as published (MQTT 5.0
// section 3.8.3.1), so live messages show whether they were retained.
type subscriber struct {
	mu   sync.Mutex
	msgs []received
	more chan struct{}
	cm   *autopaho.ConnectionManager
	subs int // subscriptions acknowledged
}

func subscribe(t testing.TB, broker string, user, pass string) *subscriber {
	t.Helper()
	u, err := url.Parse(broker)
	if err != nil {
		t.Fatal(err)
	}
	s := &subscriber{more: make(chan struct{}, 1)}
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
			ClientID: "test-subscriber-" + t.Name(),
			OnPublishReceived: []func(paho.PublishReceived) (bool, error){func(pr paho.PublishReceived) (bool, error) {
				s.mu.Lock()
				s.msgs = append(s.msgs, received{Topic: pr.Packet.Topic, Payload: append([]byte(nil), pr.Packet.Payload...),
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
	s.waitSubscribed(t, 1)
	return s
}

func (s *subscriber) signal() {
	select {
	case s.more <- struct{}{}:
	default:
	}
}

// waitSubscribed waits until n subscriptions (one per connection) were
// acknowledged.
func (s *subscriber) waitSubscribed(t testing.TB, n int) {
	t.Helper()
	s.waitFor(t, "subscription", func() bool { return s.subs >= n })
}

// waitFor waits until ok (called with s.mu held) holds, for 10 s at most.
func (s *subscriber) waitFor(t testing.TB, what string, ok func() bool) {
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

// message waits for the first message on topic from index from on whose
// payload satisfies ok (nil: any), and returns it with its index.
func (s *subscriber) message(t testing.TB, from int, topic string, ok func([]byte) bool) (received, int) {
	t.Helper()
	var got received
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

// count is how many messages arrived so far.
func (s *subscriber) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.msgs)
}

// all returns a copy of the messages so far.
func (s *subscriber) all() []received {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]received(nil), s.msgs...)
}

// cutter is a TCP relay between the publisher and the broker that the
// test can cut: every relayed connection closes at once without an MQTT
// DISCONNECT (as a cable pulled or a crash would), and new ones are
// refused while it is down.
type cutter struct {
	ln     net.Listener
	target string
	mu     sync.Mutex
	down   bool
	conns  []net.Conn
}

func newCutter(t testing.TB, target string) *cutter {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	c := &cutter{ln: ln, target: target}
	t.Cleanup(func() { ln.Close(); c.cut(true) })
	go c.serve()
	return c
}

// URL is the relay's address as an mqtt:// URL.
func (c *cutter) URL() string { return "mqtt://" + c.ln.Addr().String() }

func (c *cutter) serve() {
	for {
		in, err := c.ln.Accept()
		if err != nil {
			return
		}
		c.mu.Lock()
		if c.down {
			c.mu.Unlock()
			in.Close()
			continue
		}
		out, err := net.Dial("tcp", c.target)
		if err != nil {
			c.mu.Unlock()
			in.Close()
			continue
		}
		c.conns = append(c.conns, in, out)
		c.mu.Unlock()
		go func() { _, _ = io.Copy(out, in); out.Close() }()
		go func() { _, _ = io.Copy(in, out); in.Close() }()
	}
}

// cut closes every relayed connection; down also refuses new ones until
// cut(false) is called.
func (c *cutter) cut(down bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.down = down
	for _, conn := range c.conns {
		if tc, ok := conn.(*net.TCPConn); ok {
			_ = tc.SetLinger(0) // a reset, not a polite close
		}
		conn.Close()
	}
	c.conns = nil
}
