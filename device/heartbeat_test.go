package device

import (
	"context"
	"testing"
	"time"
)

// Idle loops still beat: the press loop and the door runner go round at
// least every Heartbeat with nothing to do.
func TestIdleLoopsBeat(t *testing.T) {
	door, _ := runDoor(t, DoorOptions{Policy: testDoorConfig(), Relay: newRecordingRelay(t), Heartbeat: 10 * time.Millisecond})
	d0 := door.Heartbeat()
	waitFor(t, "door heartbeat", func() bool { return door.Heartbeat().After(d0.Add(30 * time.Millisecond)) })

	ic := New(Config{Caller: &fakeCaller{}, Heartbeat: 10 * time.Millisecond})
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() { defer close(done); _ = ic.Run(ctx) }()
	defer func() { cancel(); <-done }()
	i0 := ic.Heartbeat()
	waitFor(t, "press loop heartbeat", func() bool { return ic.Heartbeat().After(i0.Add(30 * time.Millisecond)) })
}
