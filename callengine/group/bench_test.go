package group

import (
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/doorbell/intercom/callengine"
)

// BenchmarkMemberEventManyKeys measures what one membership event costs
// the runner's loop (Step, then Status, as loop.step does) when its
// sender holds 1,000 membership state keys ("<user>_<device>", one device
// each) in a call the intercom has joined: issue 19, finding 5. The user
// sorts before the intercom, so its devices would call in and the
// intercom places no calls itself: the cost measured is the membership
// bookkeeping, not peers.
func BenchmarkMemberEventManyKeys(b *testing.B) {
	const keys = 1000
	user := callengine.UserID("@alice:example.org")
	now := fxNow
	m := New(DefaultConfig(Device{User: fxIntercom, DeviceID: fxDevice}, fxSession, fxRoom))
	m.Step(now, RingRequested{})
	m.Step(now, MembershipPublished{EventID: "$m1"})
	event := func(i int, expires time.Time) MemberChanged {
		dev := fmt.Sprintf("DEV%04d", i)
		mb := NewOwnMembership(fxRoom, dev, "s-"+dev, now)
		mb.ExpiresTS = expires.UnixMilli()
		c, _ := json.Marshal(MemberContent{Memberships: []Membership{mb}})
		return MemberChanged{Event: MemberEvent{Type: TypeMember, StateKey: string(user) + "_" + dev, Sender: user, Content: c}}
	}
	// Set up while the user is out of the room, where its memberships do
	// not count and each costs little, then let it back in.
	m.Step(now, RoomMemberChanged{User: user, Membership: "leave"})
	for i := range keys {
		m.Step(now, event(i, now.Add(ExpireBump)))
	}
	m.Step(now, RoomMemberChanged{User: user, Membership: "join"})
	// The events measured: refreshes of expires_ts, key after key.
	refresh := make([]MemberChanged, keys)
	for i := range refresh {
		refresh[i] = event(i, now.Add(2*ExpireBump))
	}
	if n := len(m.Status(now).Members); n == 0 {
		b.Fatal("no members")
	}
	i := 0
	for b.Loop() {
		m.Step(now, refresh[i%keys])
		m.Status(now)
		i++
	}
}
