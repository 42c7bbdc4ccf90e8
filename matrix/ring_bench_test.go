package matrix

import (
	"encoding/json"
	"fmt"
	"slices"
	"testing"
	"time"

	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/doorbell/intercom/callengine"
)

// BenchmarkMembershipThenRing measures the homeserver's share of press →
// MatrixRTC ring (issue 18) with nothing else going on: the intercom's
// call membership, then the ring that references it, into one direct room
// of a real Dendrite on loopback, one after the other as the ring must
// follow its membership. The intercom's sync runs as it does in service;
// the resident's client does not sync. Per round: the membership's PUT,
// the ring's PUT, and from the membership's PUT leaving to the ring's
// origin_server_ts (Dendrite runs on this machine's clock), the figure
// BenchmarkMatrixRTC's press → ring contains. Between rounds the
// membership is cleared and the homeserver left alone for 200 ms.
func BenchmarkMembershipThenRing(b *testing.B) {
	e := startHS(b)
	s := e.loggedIn(b)
	room := directRoomWithAlice(b, e, s)
	runSession(b, s)
	// The ring's origin_server_ts, read back as its sender.
	door := client(b, e, e.door)
	ctx := b.Context()
	key := "_" + e.door.UserID + "_" + s.DeviceID() + "_m.call"
	// The size and shape of the intercom's membership and ring
	// (callengine/rtc content.go).
	member := json.RawMessage(fmt.Sprintf(`{"application":"m.call","call_id":"","scope":"m.room","device_id":%q,`+
		`"created_ts":%d,"expires":300000,"focus_active":{"type":"livekit","focus_selection":"oldest_membership"},`+
		`"foci_preferred":[{"type":"livekit","livekit_service_url":"https://sfu.example.org/livekit/jwt","livekit_alias":%q}],`+
		`"m.call.intent":"video","membershipID":%q}`, s.DeviceID(), time.Now().UnixMilli(), room, e.door.UserID+":"+s.DeviceID()))
	var memberTook, ringTook, toStamp []time.Duration
	b.ResetTimer()
	for range b.N {
		t0 := time.Now()
		memberID, err := s.PutState(ctx, callengine.RoomID(room), rtcMemberType, key, member)
		if err != nil {
			b.Fatal(err)
		}
		t1 := time.Now()
		ring := map[string]any{
			"notification_type": "ring", "sender_ts": time.Now().UnixMilli(), "lifetime": 30000,
			"m.mentions":    map[string]any{"user_ids": []string{e.alice.UserID}, "room": true},
			"m.relates_to":  map[string]any{"rel_type": "m.reference", "event_id": memberID},
			"slot_id":       "m.call#ROOM",
			"m.call.intent": "video",
		}
		ringID, err := s.SendEvent(ctx, callengine.RoomID(room), "org.matrix.msc4075.rtc.notification", ring)
		if err != nil {
			b.Fatal(err)
		}
		t2 := time.Now()
		b.StopTimer()
		var ev *event.Event
		for try := 0; ; try++ {
			if ev, err = door.GetEvent(ctx, room, id.EventID(ringID)); err == nil || try == 20 {
				break
			}
			time.Sleep(50 * time.Millisecond)
		}
		if err != nil {
			b.Fatalf("read the ring back: %v", err)
		}
		memberTook = append(memberTook, t1.Sub(t0))
		ringTook = append(ringTook, t2.Sub(t1))
		toStamp = append(toStamp, time.UnixMilli(ev.Timestamp).Sub(t0))
		if _, err := s.PutState(ctx, callengine.RoomID(room), rtcMemberType, key, json.RawMessage(`{}`)); err != nil {
			b.Fatal(err)
		}
		time.Sleep(200 * time.Millisecond)
		b.StartTimer()
	}
	b.StopTimer()
	med := func(d []time.Duration) float64 {
		d = slices.Clone(d)
		slices.Sort(d)
		return float64(d[len(d)/2]) / float64(time.Millisecond)
	}
	b.ReportMetric(med(memberTook), "membership-put-ms")
	b.ReportMetric(med(ringTook), "ring-put-ms")
	b.ReportMetric(med(toStamp), "membership-leaves-to-ring-ts-ms")
	b.ReportMetric(0, "ns/op")
	fmt.Printf("%s: membership PUT %v; ring PUT %v; membership leaves → ring's origin_server_ts %v\n", b.Name(), memberTook, ringTook, toStamp)
}
