package group

import (
	"encoding/json"
	"os"
	"path/filepath"
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
