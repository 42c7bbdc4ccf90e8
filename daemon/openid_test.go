package daemon

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/doorbell/intercom/matrix"
)

// fakeOpenID is a homeserver's OpenID endpoint: it counts requests and
// fails while down is set.
type fakeOpenID struct {
	mu    sync.Mutex
	asked int
	down  bool
	life  int // expires_in, seconds
}

func (f *fakeOpenID) fetch(context.Context) (matrix.OpenIDToken, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.asked++
	if f.down {
		return matrix.OpenIDToken{}, errors.New("homeserver away")
	}
	return matrix.OpenIDToken{AccessToken: "tok" + string(rune('a'+f.asked)), ExpiresIn: f.life}, nil
}

func (f *fakeOpenID) count() int { f.mu.Lock(); defer f.mu.Unlock(); return f.asked }

func (f *fakeOpenID) setDown(d bool) { f.mu.Lock(); f.down = d; f.mu.Unlock() }

func quietLog() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// TestOpenIDCacheGet: a press asks the homeserver only when no token with
// a minute left is in hand.
func TestOpenIDCacheGet(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		hs := &fakeOpenID{life: 3600}
		c := &openIDCache{fetch: hs.fetch, log: quietLog()}
		first, err := c.Get(t.Context())
		if err != nil || hs.count() != 1 {
			t.Fatalf("first Get: %v, %v; asked %d", first, err, hs.count())
		}
		time.Sleep(58 * time.Minute)
		if again, _ := c.Get(t.Context()); again != first || hs.count() != 1 {
			t.Fatalf("with 2 minutes left: got %v (asked %d), want the cached %v", again, hs.count(), first)
		}
		time.Sleep(time.Minute + time.Second) // under a minute left
		if next, _ := c.Get(t.Context()); next == first || hs.count() != 2 {
			t.Fatalf("with under a minute left: got %v (asked %d), want a new token", next, hs.count())
		}
		hs.setDown(true)
		time.Sleep(time.Hour)
		if tok, err := c.Get(t.Context()); err == nil || tok != nil {
			t.Fatalf("homeserver away, token expired: got %v, %v; want an error", tok, err)
		}
	})
}

// TestOpenIDCacheShortLived: a token that lives under a minute is never
// handed out twice.
func TestOpenIDCacheShortLived(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		hs := &fakeOpenID{life: 30}
		c := &openIDCache{fetch: hs.fetch, log: quietLog()}
		for i := 1; i <= 3; i++ {
			if _, err := c.Get(t.Context()); err != nil || hs.count() != i {
				t.Fatalf("Get %d: %v, asked %d", i, err, hs.count())
			}
		}
	})
}

// TestOpenIDCacheRun: Run fetches at once, again at half the lifetime,
// backs off while the homeserver is away, and a press meanwhile takes the
// token in hand without asking.
func TestOpenIDCacheRun(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		hs := &fakeOpenID{life: 3600}
		c := &openIDCache{fetch: hs.fetch, log: quietLog()}
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan struct{})
		go func() { c.Run(ctx); close(done) }()
		synctest.Wait()
		if hs.count() != 1 {
			t.Fatalf("at start: asked %d, want 1", hs.count())
		}
		if _, err := c.Get(ctx); err != nil || hs.count() != 1 {
			t.Fatalf("press after start: %v, asked %d; want the token fetched ahead", err, hs.count())
		}
		time.Sleep(30*time.Minute - time.Second)
		synctest.Wait()
		if hs.count() != 1 {
			t.Fatalf("before half-life: asked %d", hs.count())
		}
		hs.setDown(true)
		time.Sleep(time.Second)
		synctest.Wait()
		if hs.count() != 2 {
			t.Fatalf("at half-life: asked %d, want 2", hs.count())
		}
		// Away: retries after 5, 10, 20 s; the press keeps the old token.
		for _, after := range []time.Duration{5, 10, 20} {
			time.Sleep(after * time.Second)
			synctest.Wait()
		}
		if hs.count() != 5 {
			t.Fatalf("away for 35 s: asked %d, want 5", hs.count())
		}
		if _, err := c.Get(ctx); err != nil || hs.count() != 5 {
			t.Fatalf("press while away: %v, asked %d; want the token in hand", err, hs.count())
		}
		hs.setDown(false)
		time.Sleep(40 * time.Second)
		synctest.Wait()
		if hs.count() != 6 {
			t.Fatalf("back: asked %d, want 6", hs.count())
		}
		if _, err := c.Get(ctx); err != nil || hs.count() != 6 {
			t.Fatalf("press after the refresh: %v, asked %d", err, hs.count())
		}
		cancel()
		<-done
	})
}
