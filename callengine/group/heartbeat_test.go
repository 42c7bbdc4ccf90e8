package group

import (
	"context"
	"testing"
	"time"

	"github.com/doorbell/intercom/callengine"
)

// While the runner waits for its room (a homeserver outage), it is alive,
// not stuck: its heartbeat goes on, so the watchdog does not restart the
// door for an outage.
func TestRunnerBeatsWhileWaitingForTheRoom(t *testing.T) {
	r := NewRunner(RunnerConfig{JoinRoom: func(ctx context.Context) (callengine.RoomID, error) {
		<-ctx.Done()
		return "", ctx.Err()
	}}, nil, nil)
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	defer func() { cancel(); <-done }()
	start := time.Now()
	for deadline := start.Add(10 * time.Second); !r.Heartbeat().After(start.Add(500 * time.Millisecond)); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("no heartbeat after %v while waiting for the room (last %v)", time.Since(start), r.Heartbeat())
		}
	}
}
