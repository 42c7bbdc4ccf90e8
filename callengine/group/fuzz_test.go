package group

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/doorbell/intercom/callengine"
)

// FuzzDecodeToDevice feeds the to-device and membership decoders (and the
// machine behind them) arbitrary content: nothing may panic, and whatever
// decodes must re-encode.
func FuzzDecodeToDevice(f *testing.F) {
	files, _ := filepath.Glob("testdata/*.json")
	for _, p := range files {
		b, _ := os.ReadFile(p)
		f.Add("com.famedly.call.member.invite", "@alice:example.org", b)
		f.Add("m.call.candidates", "@alice:example.org_TABLET", b)
	}
	f.Add("com.famedly.call.member.", "@alice:example.org", []byte(`{"seq":-1}`))
	f.Fuzz(func(t *testing.T, typ, stateKey string, content []byte) {
		if td, err := DecodeToDevice(typ, content); err == nil {
			if _, err := EncodeToDevice(td.Envelope, td.Call); err != nil {
				t.Fatalf("decoded event does not re-encode: %v", err)
			}
		}
		_, _ = DecodeMember(stateKey, fxTablet, content)
		_, _, _ = DecodeElementCallMember(MemberEvent{Type: TypeElementCallMember, Sender: fxTablet, Content: content})
		_, _ = DecodeNotification(content)

		m := New(DefaultConfig(Device{User: fxIntercom, DeviceID: fxDevice}, fxSession, fxRoom))
		now := time.Unix(1724312345, 0)
		m.Step(now, RingRequested{})
		m.Step(now, MembershipPublished{EventID: "$m"})
		m.Step(now, MemberChanged{Event: MemberEvent{Type: TypeMember, StateKey: stateKey, Sender: fxTablet, Content: content}})
		for _, e := range m.Step(now, ToDeviceReceived{Sender: fxTablet, Type: typ, Content: content}) {
			if s, ok := e.(SendToDevice); ok && !json.Valid(s.Content) {
				t.Fatal("invalid JSON sent")
			}
			if _, ok := e.(AcceptOffer); ok && !m.Joined() {
				t.Fatal("accepted a call while not joined")
			}
		}
		_ = m.Status(now)

		// A live view (no ring): never a ring notification, never a call
		// answered while out of the call.
		cfg := DefaultConfig(Device{User: fxIntercom, DeviceID: fxDevice}, fxSession, fxRoom)
		cfg.LiveView = map[callengine.UserID]bool{fxTablet: true}
		lv := New(cfg)
		var effs []Effect
		effs = append(effs, lv.Step(now, MemberChanged{Event: MemberEvent{Type: TypeMember, StateKey: stateKey, Sender: fxTablet, Content: content}})...)
		effs = append(effs, lv.Step(now, MembershipPublished{EventID: "$m"})...)
		for _, e := range lv.Step(now, ToDeviceReceived{Sender: fxTablet, Type: typ, Content: content}) {
			if _, ok := e.(AcceptOffer); ok && !lv.Joined() {
				t.Fatal("live view accepted a call while not joined")
			}
			effs = append(effs, e)
		}
		for _, e := range effs {
			if _, ok := e.(SendNotification); ok {
				t.Fatal("live view rang")
			}
		}
	})
}

// FuzzMachine feeds random sequences of memberships, to-device calls,
// peer outcomes and timers, with small limits, and checks the invariants
// of issue 19, finding 5: never more calls than MaxCalls, never more
// devices of one user in calls than MaxDevicesPerUser, no peer made
// while out of the call, and ICE restarts only of connected calls the
// intercom placed.
func FuzzMachine(f *testing.F) {
	f.Add([]byte{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11})
	f.Add([]byte{0, 1, 1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2})
	f.Add([]byte{1, 17, 33, 49, 0, 2, 18, 34, 50, 66, 6, 22})
	f.Fuzz(func(t *testing.T, ops []byte) {
		const maxDevices, maxCalls = 2, 3
		cfg := DefaultConfig(Device{User: fxIntercom, DeviceID: fxDevice}, fxSession, fxRoom)
		cfg.MaxDevicesPerUser, cfg.MaxCalls = maxDevices, maxCalls
		cfg.LiveView = map[callengine.UserID]bool{fxTablet: true}
		m := New(cfg)
		now := time.Unix(1724312345, 0)
		// "@alice" calls the intercom, "@zed" is called by it.
		users := []callengine.UserID{fxTablet, "@zed:example.org", "@bob:example.org"}
		var calls []callengine.CallID
		for i, op := range ops {
			arg := int(ops[(i+1)%len(ops)])
			u := users[arg%len(users)]
			dev := fmt.Sprintf("D%d", arg%5)
			var ev Event
			switch op % 12 {
			case 0:
				ev = RingRequested{}
			case 1, 2:
				b, _ := json.Marshal(MemberContent{Memberships: []Membership{NewOwnMembership(fxRoom, dev, "s"+dev, now)}})
				ev = MemberChanged{Event: MemberEvent{Type: TypeMember, StateKey: string(u) + "_" + dev, Sender: u, Content: b}}
			case 3:
				ev = MemberChanged{Event: MemberEvent{Type: TypeMember, StateKey: string(u) + "_" + dev, Sender: u, Content: []byte(`{"memberships":[]}`)}}
			case 4:
				s := int64(0)
				b, _ := EncodeToDevice(Envelope{RoomID: fxRoom, ConfID: string(fxRoom), DeviceID: dev, SenderSessionID: "s" + dev,
					DestSessionID: fxSession, Seq: &s}, invite(fmt.Sprintf("in-%d", i)))
				ev = ToDeviceReceived{Sender: u, Type: "com.famedly.call.member.invite", Content: b}
			case 5:
				ev = MembershipPublished{EventID: "$m"}
			case 6, 7:
				if len(calls) > 0 {
					id := calls[arg%len(calls)]
					ev = []Event{OfferCreated{CallID: id, SDP: fxSDP}, OfferAccepted{CallID: id, SDP: fxSDP},
						PeerChanged{CallID: id, State: callengine.PeerState(arg % 6)},
						RestartOffered{CallID: id, SDP: fxSDP}, RestartAnswerApplied{CallID: id}}[arg%5]
				}
			case 8:
				// Per-call timers (TimerConnect, the recovery's) carry the
				// call's ID.
				id := TimerID{Kind: TimerKind(1 + arg%8)}
				if len(calls) > 0 && id.Kind != TimerRing && id.Kind != TimerRefresh && id.Kind != TimerExpiry {
					id.Key = string(calls[arg%len(calls)])
				}
				ev = TimerFired{ID: id}
			case 9:
				ev = AnsweredElsewhere{}
			case 10:
				ev = RoomMemberChanged{User: u, Membership: []string{"join", "leave"}[arg%2]}
			case 11:
				ev = LeaveRequested{}
			}
			if ev == nil {
				continue
			}
			if op%12 == 8 {
				now = now.Add(time.Duration(arg) * time.Second)
			}
			var restarts []callengine.CallID
			for _, e := range m.Step(now, ev) {
				switch e := e.(type) {
				case RestartICE:
					restarts = append(restarts, e.CallID)
				case CreateOffer:
					calls = append(calls, e.CallID)
					if !m.Joined() {
						t.Fatal("call placed out of the call")
					}
				case AcceptOffer:
					calls = append(calls, e.CallID)
					if !m.Joined() {
						t.Fatal("call accepted out of the call")
					}
				}
			}
			st := m.Status(now)
			for _, id := range restarts {
				// Only a connected call the intercom placed is restarted
				// by it (the caller restarts).
				if i := slices.IndexFunc(st.Calls, func(c CallStatus) bool { return c.CallID == id }); i < 0 ||
					!st.Calls[i].Outbound || st.Calls[i].State != string(legConnected) {
					t.Fatalf("ICE restart of call %s: %+v", id, st.Calls)
				}
			}
			if len(st.Calls) > maxCalls {
				t.Fatalf("%d calls, at most %d", len(st.Calls), maxCalls)
			}
			perUser := map[callengine.UserID]map[string]bool{}
			for _, c := range st.Calls {
				if perUser[c.User] == nil {
					perUser[c.User] = map[string]bool{}
				}
				perUser[c.User][c.DeviceID] = true
			}
			for u, devs := range perUser {
				if len(devs) > maxDevices {
					t.Fatalf("%s has %d devices in calls, at most %d", u, len(devs), maxDevices)
				}
			}
		}
	})
}
