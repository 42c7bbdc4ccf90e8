package device

import (
	"fmt"
	"testing"
	"time"

	"github.com/doorbell/intercom/callengine"
)

// BenchmarkDoorPolicyDecide is the policy's share of "command received →
// relay on" (≤ 50 ms end to end; BenchmarkDoorCommand in cmd/intercom
// measures the whole path with Dendrite): a fresh "!open" during a call
// with the memory full (each command forgets the oldest), from a resident
// and from a stranger.
func BenchmarkDoorPolicyDecide(b *testing.B) {
	for _, sender := range []callengine.UserID{alice, mallory} {
		b.Run(string(sender[1:len(sender)-len(":hs.test")]), func(b *testing.B) {
			p := NewDoorPolicy(testDoorConfig(), t0, DoorMemory{})
			p.ServerTime(t0, t0)
			p.CallChanged(t0, true)
			now := t0
			for i := range maxSeen {
				now = now.Add(time.Second)
				p.Decide(now, openReq(fmt.Sprintf("$fill%d", i), alice, now))
			}
			ids := make([]string, 1<<14)
			b.ReportAllocs()
			b.ResetTimer()
			for i := range b.N {
				if i%len(ids) == 0 {
					b.StopTimer()
					for k := range ids {
						ids[k] = fmt.Sprintf("$e%d.%d", i, k)
					}
					b.StartTimer()
				}
				now = now.Add(time.Second)
				p.ServerTime(now, now) // the Door does this for every request
				p.Decide(now, openReq(ids[i%len(ids)], sender, now))
			}
		})
	}
}
