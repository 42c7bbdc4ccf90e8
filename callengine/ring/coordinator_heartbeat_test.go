package ring

import (
	"context"
	"testing"
	"time"
)

// An idle coordinator still goes round, so the watchdog can tell it from
// a stuck one.
func TestCoordinatorHeartbeat(t *testing.T) {
	c := NewCoordinator(Config{})
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	defer func() { cancel(); <-done }()
	start := time.Now()
	for deadline := start.Add(10 * time.Second); !c.Heartbeat().After(start.Add(500 * time.Millisecond)); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("no heartbeat after %v while idle (last %v)", time.Since(start), c.Heartbeat())
		}
	}
}
