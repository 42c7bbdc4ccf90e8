package matrix

import (
	"context"
	"encoding/json"
	"testing"

	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"
)

// BenchmarkSeal is what encryption adds to each event the intercom sends
// into an encrypted room once its Megolm session is shared (as
// PrepareEncryption leaves it): the state store's answer that the room is
// encrypted and one Megolm encryption, with the session's ratchet saved to
// SQLite. An m.call.invite with an SDP offer of ~4 kB.
func BenchmarkSeal(b *testing.B) {
	e := offlineE2EE(b)
	ctx := context.Background()
	room := id.RoomID("!dm:hs.test")
	if err := e.state.SetEncryptionEvent(ctx, room, &event.EncryptionEventContent{Algorithm: id.AlgorithmMegolmV1}); err != nil {
		b.Fatal(err)
	}
	if err := e.state.MarkMembersFetched(ctx, room); err != nil {
		b.Fatal(err)
	}
	// Shared with nobody (no members): a session the sends can use.
	if err := e.mach.ShareGroupSession(ctx, room, nil); err != nil {
		b.Fatal(err)
	}
	sdp := make([]byte, 4000)
	for i := range sdp {
		sdp[i] = 'a' + byte(i%26)
	}
	body, _ := json.Marshal(map[string]any{"call_id": "c1", "party_id": "DOOR", "version": "1", "lifetime": 60000,
		"offer": map[string]string{"type": "offer", "sdp": string(sdp)}})
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		typ, _, err := e.seal(ctx, room, "m.call.invite", body)
		if err != nil || typ != event.EventEncrypted {
			b.Fatalf("seal: %v, %v", typ, err)
		}
		if i%90 == 89 {
			// Megolm sessions rotate after 100 messages; keep within one.
			b.StopTimer()
			if err := e.store.RemoveOutboundGroupSession(ctx, room); err != nil {
				b.Fatal(err)
			}
			if err := e.mach.ShareGroupSession(ctx, room, nil); err != nil {
				b.Fatal(err)
			}
			b.StartTimer()
		}
	}
}
