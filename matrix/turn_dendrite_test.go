package matrix

import (
	"context"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/doorbell/intercom/callengine"
	"github.com/doorbell/intercom/internal/testenv/dendrite"
)

// TestDendriteTURN: a homeserver configured with TURN hands out time-limited
// credentials (coturn's REST scheme: "expiry:user" and an HMAC), RunTURN
// fetches them and fetches new ones before the ttl runs out; a homeserver
// without TURN hands out none.
func TestDendriteTURN(t *testing.T) {
	if testing.Short() {
		t.Skip("integration test: needs Dendrite")
	}
	const lifetime = 12 * time.Second
	srv := dendrite.StartTWith(t, dendrite.Options{TURN: &dendrite.TURN{
		URIs:         []string{"turn:127.0.0.1:3478?transport=udp", "turn:127.0.0.1:3478?transport=tcp"},
		SharedSecret: "turn-secret",
		UserLifetime: lifetime,
	}})
	door, err := srv.Register(t.Context(), "door", doorPassword)
	if err != nil {
		t.Fatal(err)
	}
	s, err := New(Options{
		Homeserver: srv.BaseURL, UserID: callengine.UserID(door.UserID), Password: doorPassword,
		Store:  &memStore{},
		Logger: slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug})),
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Login(t.Context()); err != nil {
		t.Fatal(err)
	}

	got, ok, err := s.FetchTURN(t.Context())
	if err != nil || !ok {
		t.Fatalf("FetchTURN: %+v %v %v", got, ok, err)
	}
	if len(got.URIs) != 2 || got.TTL != lifetime || got.Password == "" || !strings.HasSuffix(got.Username, ":"+door.UserID) {
		t.Errorf("FetchTURN: %+v", got)
	}

	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	var (
		mu      sync.Mutex
		names   []string
		changed = make(chan struct{}, 8)
	)
	done := make(chan error, 1)
	start := time.Now()
	go func() {
		done <- s.RunTURN(ctx, func(ts []TURNServer) {
			mu.Lock()
			if len(ts) == 1 {
				names = append(names, ts[0].Username)
			} else {
				names = append(names, "none")
			}
			mu.Unlock()
			changed <- struct{}{}
		})
	}()
	// The first set at once, the refresh at ttl/2 = 6 s.
	for i := range 2 {
		select {
		case <-changed:
		case <-time.After(lifetime):
			t.Fatalf("update %d never came", i+1)
		}
	}
	took := time.Since(start)
	cancel()
	<-done
	mu.Lock()
	defer mu.Unlock()
	t.Logf("credentials %v; refreshed after %v", names, took)
	if len(names) != 2 || names[0] == names[1] || names[1] == "none" {
		t.Errorf("updates %v: want two different credentials", names)
	}
	if took < lifetime/2-time.Second || took > lifetime-time.Second {
		t.Errorf("refreshed after %v, want about ttl/2 = %v", took, lifetime/2)
	}
	if ts := s.TURNServers(); len(ts) != 1 || ts[0].Username != names[1] {
		t.Errorf("TURNServers %+v", ts)
	}

	// A homeserver without TURN configured answers {}.
	plain := startHS(t)
	ps := plain.loggedIn(t)
	if got, ok, err := ps.FetchTURN(t.Context()); ok || err != nil {
		t.Errorf("FetchTURN without TURN: %+v %v %v", got, ok, err)
	}
}
