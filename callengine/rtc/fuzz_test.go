package rtc

import (
	"errors"
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
			switch op % 17 {
			case 0:
				ev = RingRequested{Targets: targets()}
			case 1:
				ev = HangupRequested{}
			case 2:
				ev = AnsweredElsewhere{}
			case 3:
				ev = MembershipSent{Room: room, EventID: "$member-" + string(room)}
			case 4:
				ev = NotificationSent{Room: room, EventID: "$ring-" + string(room)}
			case 5:
				ev = MemberChanged{Room: roomA, Event: joinEvent(alice, now)}
			case 6:
				ev = ParticipantChanged{Room: room, Identity: alice.Identity(), Present: op&0x20 != 0}
			case 7:
				ev = MemberChanged{Room: roomA, Event: leaveEvent(alice, now)}
			case 8:
				ev = TimerFired{ID: TimerID{Kind: TimerKind(int(op>>5) % 3), Room: room}}
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
			}
			for _, eff := range m.Step(now, ev) {
				switch e := eff.(type) {
				case PublishMembership:
					inCall[e.Room] = true
				case ClearMembership:
					delete(inCall, e.Room)
				case JoinSFU:
					atSFU[e.Room] = true
				case LeaveSFU:
					delete(atSFU, e.Room)
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
