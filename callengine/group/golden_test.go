package group

import (
	"bytes"
	"encoding/json"
	"flag"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/doorbell/intercom/callengine"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

// Fixed identities of the fixtures.
const (
	fxRoom      = callengine.RoomID("!household:example.org")
	fxIntercom  = callengine.UserID("@intercom:example.org")
	fxDevice    = "INTERCOMDEV"
	fxSession   = "c2Vzc2lvbi1pbnRlcmNvbQ"
	fxTablet    = callengine.UserID("@alice:example.org")
	fxTabletDev = "TABLET"
	fxTabletSes = "dGFibGV0LXNlc3Npb24"
	fxSDP       = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n"
)

var fxNow = time.UnixMilli(1724312345678)

func golden(t *testing.T, name string, got []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	if err := json.Indent(&buf, got, "", "  "); err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	buf.WriteByte('\n')
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.WriteFile(path, buf.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run with -update to create it)", err)
	}
	if !bytes.Equal(buf.Bytes(), want) {
		t.Errorf("%s differs from the golden file:\n got %s\nwant %s", name, buf.Bytes(), want)
	}
	return want
}

// keys returns the object's keys, sorted.
func keys(t *testing.T, raw []byte) []string {
	t.Helper()
	var m map[string]json.RawMessage
	if err := json.Unmarshal(raw, &m); err != nil {
		t.Fatal(err)
	}
	return slices.Sorted(maps.Keys(m))
}

func wantKeys(t *testing.T, what string, raw []byte, want ...string) {
	t.Helper()
	slices.Sort(want)
	if got := keys(t, raw); !slices.Equal(got, want) {
		t.Errorf("%s keys = %v, want %v", what, got, want)
	}
}

// TestGoldenMembership checks the membership the intercom publishes
// against dart-sdk's CallMembership.toJson (matrix-voip.md §4.4): a
// memberships list whose entry has call_id, application, scope,
// foci_active (a list, mesh), device_id, expires_ts (now + 6 min),
// membershipID and feeds.
func TestGoldenMembership(t *testing.T) {
	c := MemberContent{Memberships: []Membership{NewOwnMembership(fxRoom, fxDevice, fxSession, fxNow)}}
	b, _ := json.Marshal(c)
	raw := golden(t, "member_intercom.json", b)
	wantKeys(t, "content", raw, "memberships")
	var doc struct {
		Memberships []json.RawMessage `json:"memberships"`
	}
	if err := json.Unmarshal(raw, &doc); err != nil || len(doc.Memberships) != 1 {
		t.Fatalf("memberships: %v %d", err, len(doc.Memberships))
	}
	wantKeys(t, "entry", doc.Memberships[0], "call_id", "application", "scope", "foci_active", "device_id", "expires_ts", "membershipID", "feeds")
	var e struct {
		CallID      string           `json:"call_id"`
		Application string           `json:"application"`
		Scope       string           `json:"scope"`
		Foci        []map[string]any `json:"foci_active"`
		DeviceID    string           `json:"device_id"`
		ExpiresTS   int64            `json:"expires_ts"`
		ID          string           `json:"membershipID"`
	}
	_ = json.Unmarshal(doc.Memberships[0], &e)
	if e.CallID != string(fxRoom) || e.Application != "m.call" || e.Scope != "m.room" || e.DeviceID != fxDevice || e.ID != fxSession {
		t.Errorf("entry = %+v", e)
	}
	if len(e.Foci) != 1 || e.Foci[0]["type"] != "mesh" || len(e.Foci[0]) != 1 {
		t.Errorf("foci_active = %v, want [{type: mesh}]", e.Foci)
	}
	if e.ExpiresTS != fxNow.Add(6*time.Minute).UnixMilli() {
		t.Errorf("expires_ts = %d, want now + 6 min", e.ExpiresTS)
	}
	if OwnStateKey(fxIntercom) != string(fxIntercom) {
		t.Errorf("state key %q, want the user ID (famedly default)", OwnStateKey(fxIntercom))
	}
	// It reads back as a valid member of the call.
	list, err := DecodeMember(string(fxIntercom), fxIntercom, raw)
	if err != nil || len(list) != 1 || !list[0].Mesh() {
		t.Fatalf("DecodeMember(own) = %v, %v", list, err)
	}

	leave, _ := json.Marshal(MemberContent{Memberships: []Membership{}})
	golden(t, "member_intercom_leave.json", leave)
}

// TestGoldenReadMembership reads the fixtures of what household devices
// publish: dart-sdk's documented content (mesh and LiveKit), and Element
// Call's per-device session membership.
func TestGoldenReadMembership(t *testing.T) {
	raw, err := os.ReadFile("testdata/member_famedly_device.json")
	if err != nil {
		t.Fatal(err)
	}
	list, err := DecodeMember(string(fxTablet), fxTablet, raw)
	if err != nil || len(list) != 1 {
		t.Fatalf("DecodeMember = %v, %v", list, err)
	}
	m := list[0]
	if m.DeviceID != fxTabletDev || m.MembershipID != fxTabletSes || m.CallID != string(fxRoom) || !m.Mesh() || m.ExpiresTS != 1724312760000 {
		t.Errorf("member = %+v", m)
	}
	raw, _ = os.ReadFile("testdata/member_famedly_livekit.json")
	list, err = DecodeMember(string(fxTablet), fxTablet, raw)
	if err != nil || len(list) != 1 || list[0].Mesh() || list[0].FociActive[0].LiveKitAlias != string(fxRoom) {
		t.Errorf("livekit member = %+v, %v", list, err)
	}
	raw, _ = os.ReadFile("testdata/member_element_call.json")
	ec, left, err := DecodeElementCallMember(MemberEvent{Type: TypeElementCallMember, StateKey: "_@alice:example.org_ABCDEF_m.call",
		Sender: fxTablet, Content: raw, Timestamp: fxNow})
	if err != nil || left || ec.DeviceID != "ABCDEF" || ec.Focus != "livekit" || !ec.Expires.Equal(time.UnixMilli(1724312000000).Add(4*time.Hour)) {
		t.Errorf("element call member = %+v left=%v err=%v", ec, left, err)
	}
}

// TestGoldenNotification checks the ring against MSC4075 as js-sdk and
// dart-sdk send it (§4.7): m.mentions with room:true, notification_type
// ring, an m.reference to the own membership event, sender_ts, lifetime.
func TestGoldenNotification(t *testing.T) {
	b, _ := json.Marshal(NewRing("$membership", fxNow, 60*time.Second))
	raw := golden(t, "rtc_notification_ring.json", b)
	wantKeys(t, "notification", raw, "m.mentions", "notification_type", "m.relates_to", "sender_ts", "lifetime", "m.call.intent")
	n, err := DecodeNotification(raw)
	if err != nil {
		t.Fatal(err)
	}
	if !n.Mentions.Room || n.NotificationType != "ring" || n.RelatesTo.RelType != "m.reference" ||
		n.RelatesTo.EventID != "$membership" || n.SenderTS != fxNow.UnixMilli() || n.Lifetime != 60000 {
		t.Errorf("notification = %+v", n)
	}
	if NewRing("", fxNow, 5*time.Minute).Lifetime != 90000 {
		t.Error("lifetime not capped at 90 s")
	}
	if _, err := DecodeNotification([]byte(`{"notification_type":"ring","lifetime":1}`)); err == nil {
		t.Error("notification without sender_ts accepted")
	}
}

// fxCalls are the call contents the intercom sends in a mesh call.
func fxCalls() map[string]any {
	common := callengine.Common{CallID: "c2Vzc2lvbi1pbnRlcmNvbQ.1", PartyID: fxDevice, Version: "1"}
	md := callengine.StreamMetadata{"intercom-stream": {Purpose: "m.usermedia"}}
	mid, idx := "0", uint16(0)
	return map[string]any{
		"invite": &callengine.Invite{Common: common, Lifetime: 60000, Offer: callengine.SessionDescription{Type: "offer", SDP: fxSDP},
			Metadata: md, MetadataUnstable: md},
		"answer": &callengine.Answer{Common: common, Answer: callengine.SessionDescription{Type: "answer", SDP: fxSDP},
			Metadata: md, MetadataUnstable: md},
		"candidates": &callengine.Candidates{Common: common, Candidates: []callengine.Candidate{
			{Candidate: "candidate:1 1 udp 2130706431 127.0.0.1 50000 typ host", SDPMid: &mid, SDPMLineIndex: &idx}, {Candidate: ""}}},
		"hangup":        &callengine.Hangup{Common: common, Reason: "user_hangup"},
		"select_answer": &callengine.SelectAnswer{Common: common, SelectedPartyID: fxTabletDev},
		"reject":        &callengine.Reject{Common: common},
		"negotiate": &callengine.Negotiate{Common: common, Lifetime: 60000,
			Description: callengine.SessionDescription{Type: "answer", SDP: fxSDP}},
	}
}

// TestGoldenToDevice checks every to-device call event of the mesh, in
// both families, against MSC3401 "Call setup" and dart-sdk (§4.5, §6):
// room_id, conf_id, device_id, sender_session_id, dest_session_id and
// seq beside the 1:1 fields (call_id, party_id, version) and the
// type's own fields; and that each decodes back to the same values.
func TestGoldenToDevice(t *testing.T) {
	own := map[string][]string{
		"invite":        {"lifetime", "offer", "sdp_stream_metadata", "org.matrix.msc3077.sdp_stream_metadata"},
		"answer":        {"answer", "sdp_stream_metadata", "org.matrix.msc3077.sdp_stream_metadata"},
		"candidates":    {"candidates"},
		"hangup":        {"reason"},
		"select_answer": {"selected_party_id"},
		"reject":        {},
		"negotiate":     {"lifetime", "description"},
	}
	envelope := []string{"room_id", "conf_id", "device_id", "sender_session_id", "dest_session_id", "seq", "call_id", "party_id", "version"}
	for name, call := range fxCalls() {
		for _, fam := range []Family{FamilyFamedly, FamilyMatrix} {
			typ := ToDeviceType(fam, "m.call."+name)
			t.Run(typ, func(t *testing.T) {
				seq := int64(3)
				body, err := EncodeToDevice(Envelope{RoomID: fxRoom, ConfID: string(fxRoom), DeviceID: fxDevice,
					SenderSessionID: fxSession, DestSessionID: fxTabletSes, Seq: &seq}, call)
				if err != nil {
					t.Fatal(err)
				}
				raw := golden(t, "todevice_"+typ+".json", body)
				wantKeys(t, typ, raw, append(slices.Clone(envelope), own[name]...)...)
				td, err := DecodeToDevice(typ, raw)
				if err != nil {
					t.Fatal(err)
				}
				if td.Family != fam || td.CallType != "m.call."+name || td.RoomID != fxRoom || td.ConfID != string(fxRoom) ||
					td.DeviceID != fxDevice || td.SenderSessionID != fxSession || td.DestSessionID != fxTabletSes ||
					td.Seq == nil || *td.Seq != 3 || td.CallID() != "c2Vzc2lvbi1pbnRlcmNvbQ.1" || td.PartyID() != fxDevice {
					t.Errorf("decoded %+v", td)
				}
			})
		}
	}
	if got := ToDeviceType(FamilyFamedly, "m.call.invite"); got != "com.famedly.call.member.invite" {
		t.Errorf("famedly invite type %q", got)
	}
}

// TestReadHouseholdToDevice reads a dart-sdk style invite: device_id on
// the invite only, the famedly type, seq 0.
func TestReadHouseholdToDevice(t *testing.T) {
	raw, err := os.ReadFile("testdata/todevice_from_famedly_invite.json")
	if err != nil {
		t.Fatal(err)
	}
	td, err := DecodeToDevice("com.famedly.call.member.invite", raw)
	if err != nil {
		t.Fatal(err)
	}
	inv := td.Call.(*callengine.Invite)
	if td.DeviceID != fxTabletDev || td.SenderSessionID != fxTabletSes || td.DestSessionID != fxSession || *td.Seq != 0 ||
		inv.Offer.Type != "offer" || inv.MetadataUnstable["tablet-stream"].Purpose != "m.usermedia" {
		t.Errorf("decoded %+v %+v", td, inv)
	}
}
