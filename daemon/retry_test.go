package daemon

import (
	"context"
	"errors"
	"log/slog"
	"testing"
	"testing/synctest"
	"time"

	"github.com/doorbell/intercom/internal/runloop"
)

// TestRetry: start-up chores retry every failure, a permanent one too,
// 1 s, 2 s, 4 s … apart, and give up only when ctx ends.
func TestRetry(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		log := slog.New(slog.DiscardHandler)
		start, n := time.Now(), 0
		err := retry(t.Context(), log, "rooms", func() error {
			if n++; n < 4 {
				return runloop.Permanent(errors.New("create room: 500"))
			}
			return nil
		})
		if err != nil || n != 4 || time.Since(start) != 7*time.Second {
			t.Fatalf("retry = %v after %d attempts and %v; want success after 4 and 7s", err, n, time.Since(start))
		}
		ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
		defer cancel()
		if err := retry(ctx, log, "rooms", func() error { return errors.New("unreachable") }); !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("retry after ctx ended = %v", err)
		}
	})
}
