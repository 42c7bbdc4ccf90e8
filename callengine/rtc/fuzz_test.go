package rtc

import (
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/doorbell/intercom/callengine"
	"github.com/doorbell/intercom/callengine/group"
)

// FuzzMachine drives the machine with arbitrary event sequences (hostile
// contents included) and checks what must always hold: the intercom is in
// a room's call exactly while it owns a leg there, so every membership it
// published is cleared and every SFU it joined is left by the time it is
// idle, and at most one resident answers a ring.
func FuzzMachine(f *testing.F) {
	f.Add([]byte{0, 3, 4, 5, 1, 2, 6, 7, 8})
	f.Add([]byte{0, 3, 4, 9, 10, 11, 12, 13})
	f.Add([]byte{0, 0, 14, 5, 2, 15, 16})
	f.Add([]byte{0x20, 3, 4, 17, 5, 13, 7, 0x68, 17, 1}) // encrypted: keys, joins, a leave, the key timer

	f.Fuzz(func(t *testing.T, script []byte) {
		m := newMachine()
		now := t0
		inCall := map[callengine.RoomID]bool{} // membership published, not cleared
		atSFU := map[callengine.RoomID]bool{}
		answers := 0
		rooms := []callengine.RoomID{roomA, roomB}
		contents := [][]byte{[]byte(`{}`), []byte(`{"memberships":[]}`), []byte(`null`), []byte(`{"application":"m.call"}`),
			[]byte(`{"m.relates_to":{"rel_type":"m.reference","event_id":"$ring-!a:example.org"}}`)}
		for i, op := range script {
			room := rooms[i%2]
			now = now.Add(time.Duration(op%7) * time.Second)
			var ev Event
			switch op % 19 {
			case 0:
				ts := targets()
				if op&0x20 != 0 { // encrypted rooms: media keys
					for i := range ts {
						ts[i].Encrypted = true
					}
				}
				ev = RingRequested{Targets: ts}
			case 1:
				ev = HangupRequested{}
			case 2:
				ev = AnsweredElsewhere{}
			case 3:
				ev = MembershipSent{Room: room, EventID: "$member-" + string(room)}
			case 4:
				ev = NotificationSent{Room: room, EventID: "$ring-" + string(room)}
			case 5:
				if op&0x20 != 0 { // publishing on another SFU (multi-SFU)
					ev = MemberChanged{Room: roomA, Event: joinEventOn(alice, now, otherSFU)}
				} else {
					ev = MemberChanged{Room: roomA, Event: joinEvent(alice, now)}
				}
			case 6:
				ev = ParticipantChanged{Room: room, Identity: alice.Identity(), Present: op&0x20 != 0}
			case 7:
				ev = MemberChanged{Room: roomA, Event: leaveEvent(alice, now)}
			case 8:
				ev = TimerFired{ID: TimerID{Kind: TimerKind(int(op>>5) % 4), Room: room}}
			case 9:
				ev = DeclineReceived{Room: room, Sender: alice.User, Content: contents[int(op>>5)%len(contents)]}
			case 10:
				ev = MemberChanged{Room: room, Event: group.MemberEvent{Type: TypeMember, StateKey: StateKey(bob), Sender: bob.User, Content: contents[int(op>>5)%len(contents)], Timestamp: now}}
			case 11:
				ev = SFUChanged{Room: room, Connected: op&0x20 != 0}
			case 12:
				ev = MembershipSent{Room: room, Err: errors.New("refused")}
			case 13:
				ev = MemberChanged{Room: roomB, Event: joinEvent(bob, now)}
			case 14:
				ev = NotificationSent{Room: room, Err: errors.New("refused")}
			case 15:
				ev = SFUChanged{Room: room, Err: errors.New("gone")}
			case 16:
				ev = MemberChanged{Room: room, Event: joinEvent(self, now)}
			case 18:
				ev = RemoteSFUChanged{Room: room, ServiceURL: otherSFU, Connected: op&0x20 != 0}
			case 17:
				from := []Device{alice, bob, self}[int(op>>5)%3]
				ev = MediaKeyReceived{Key: MediaKey{Room: room, From: from, Index: op, Key: []byte("0123456789abcdef")}}
			}
			keyed := map[callengine.RoomID]bool{}
			effs := m.Step(now, ev)
			for _, eff := range effs {
				switch e := eff.(type) {
				case UseMediaKey:
					keyed[e.Room] = true
				case JoinSFU:
					if l := m.legs[e.Room]; l != nil && l.keys != nil && !keyed[e.Room] {
						t.Fatalf("encrypted room %s joined before its key was set", e.Room)
					}
				case ShareMediaKey:
					if len(e.To) == 0 || slices.Contains(e.To, self) {
						t.Fatalf("media key shared with %v", e.To)
					}
				case RemoteMediaKey:
					if e.Identity == self.Identity() {
						t.Fatal("own key taken as a participant's")
					}
				}
			}
			for _, eff := range effs {
				switch e := eff.(type) {
				case PublishMembership:
					inCall[e.Room] = true
				case ClearMembership:
					delete(inCall, e.Room)
				case JoinSFU:
					atSFU[e.Room] = true
				case LeaveSFU:
					delete(atSFU, e.Room)
				case JoinRemoteSFU:
					atSFU[e.Room+"|"+callengine.RoomID(e.ServiceURL)] = true
				case LeaveRemoteSFU:
					delete(atSFU, e.Room+"|"+callengine.RoomID(e.ServiceURL))
				case Answered:
					answers++
				case Ended:
					answers = 0
				}
			}
			if m.Phase() == PhaseIdle && (len(inCall) > 0 || len(atSFU) > 0) {
				t.Fatalf("idle but still in calls %v / at SFUs %v", inCall, atSFU)
			}
			if len(inCall) != len(m.legs) {
				t.Fatalf("memberships %v but legs %d", inCall, len(m.legs))
			}
			if answers > 1 {
				t.Fatal("two answers to one ring")
			}
			if (m.Phase() == PhaseInCall) != (answers == 1) {
				t.Fatalf("phase %s with %d answers", m.Phase(), answers)
			}
		}
	})
}

// FuzzDecodeEncryptionKeys: any content decodes or fails with
// ErrMalformed, never panics; what decodes names the encrypting device
// and a usable key.
func FuzzDecodeEncryptionKeys(f *testing.F) {
	f.Add([]byte(`{"keys":{"index":0,"key":"BQUFBQUFBQUFBQUFBQUFBQ=="},"member":{"id":"x","claimed_device_id":"ALICEPHONE"},"room_id":"!a:example.org","session":{"call_id":"","application":"m.call","scope":"m.room"},"sent_ts":1}`))
	f.Add([]byte(`{"keys":[{"index":0,"key":"BQUFBQUFBQUFBQUFBQUFBQ=="}]}`))
	f.Fuzz(func(t *testing.T, content []byte) {
		mk, err := DecodeEncryptionKeys(alice.User, alice.DeviceID, content)
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("error %v is not ErrMalformed", err)
			}
			return
		}
		if mk.From != alice || mk.Room == "" || len(mk.Key) < MediaKeyBytes || len(mk.Key) > maxMediaKeyBytes {
			t.Fatalf("decoded %+v", mk)
		}
	})
}
