package rtc

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/url"
	"strings"
	"time"

	"github.com/doorbell/intercom/callengine"
	"github.com/doorbell/intercom/callengine/group"
)

// Event types (matrix-voip.md §4.2, §4.7). The membership and notification
// shapes are shared with the household call (callengine/group), which also
// reads Element Call members.
const (
	TypeMember       = group.TypeElementCallMember // org.matrix.msc3401.call.member
	TypeNotification = group.TypeRTCNotification   // org.matrix.msc4075.rtc.notification
	// TypeDecline is MSC4310's decline of a ring (js-sdk RTCDecline).
	TypeDecline = "org.matrix.msc4310.rtc.decline"
	// TypeSlot is MSC4143's slot state event (state key Slot). js-sdk 43
	// drops every ring whose slot has no such event with status "open".
	TypeSlot = "org.matrix.msc4143.rtc.slot"
)

// SlotContent is the content of an open or closed slot (js-sdk
// RtcSlotEventContent).
type SlotContent struct {
	Status      string          `json:"status"` // "open" or "closed"
	Application SlotApplication `json:"application"`
}

// SlotApplication names what the slot is for.
type SlotApplication struct {
	Type string `json:"type"`
}

// OpenSlot is the slot the intercom's calls need.
var OpenSlot = SlotContent{Status: "open", Application: SlotApplication{Type: group.ApplicationCall}}

// SlotOpen reports whether a slot event's content opens the room call, as
// js-sdk's isSlotOpen reads it.
func SlotOpen(content []byte) bool {
	var c struct {
		Status      string `json:"status"`
		Application *struct {
			Type string `json:"type"`
		} `json:"application"`
	}
	return json.Unmarshal(content, &c) == nil && c.Status == "open" && c.Application != nil && c.Application.Type == group.ApplicationCall
}

// Slot is the room-wide call every member joins (call_id "").
const Slot = "m.call#ROOM"

// MaxDeclineBytes bounds a decline's content; a real one is ~100 bytes.
const MaxDeclineBytes = 4 << 10

// Device is a user's device, the unit of MatrixRTC membership.
type Device struct {
	User     callengine.UserID
	DeviceID string
}

// Identity is the LiveKit participant identity lk-jwt-service gives this
// device through /sfu/get: "<user>:<device>" (matrix-voip.md §5.2).
func (d Device) Identity() string { return string(d.User) + ":" + d.DeviceID }

// StateKey is the per-device membership state key,
// "_<user>_<device>_m.call" (js-sdk makeMembershipStateKey; the leading
// underscore sidesteps the rule that a key starting with @ must equal the
// sender).
func StateKey(d Device) string { return "_" + string(d.User) + "_" + d.DeviceID + "_m.call" }

// LiveKitRoomName is the LiveKit room lk-jwt-service puts a Matrix room's
// call in: unpadded standard base64 of sha256 over the JSON array
// [room_id, "m.call#ROOM"]. A self-minted token must name the same room,
// or the intercom would sit alone in a room nobody else joins.
func LiveKitRoomName(room callengine.RoomID) string {
	b, _ := json.Marshal([]string{string(room), Slot}) // strings always marshal
	sum := sha256.Sum256(b)
	return base64.RawStdEncoding.EncodeToString(sum[:])
}

// Focus is a LiveKit transport (js-sdk LivekitTransport).
type Focus struct {
	Type           string `json:"type"`
	ServiceURL     string `json:"livekit_service_url,omitempty"`
	Alias          string `json:"livekit_alias,omitempty"`
	FocusSelection string `json:"focus_selection,omitempty"`
}

// Membership is the content of the intercom's own call.member state event,
// in the session shape js-sdk's makeMyMembership writes (§4.2).
type Membership struct {
	Application   string  `json:"application"`
	CallID        string  `json:"call_id"`
	Scope         string  `json:"scope"`
	DeviceID      string  `json:"device_id"`
	MembershipID  string  `json:"membershipID"`
	Expires       int64   `json:"expires"` // ms after created_ts
	Intent        string  `json:"m.call.intent"`
	FocusActive   Focus   `json:"focus_active"`
	FociPreferred []Focus `json:"foci_preferred"`
	// CreatedTS is omitted on the first join and copied on every refresh,
	// as js-sdk does; expiry is counted from it (or from
	// origin_server_ts when absent).
	CreatedTS int64 `json:"created_ts,omitempty"`
}

// NewMembership is the intercom's membership in room. created is the zero
// time on the first join; a refresh passes the first event's time and a
// larger lifetime, so receivers keep one continuous membership.
func NewMembership(self Device, room callengine.RoomID, serviceURL string, lifetime time.Duration, created time.Time) Membership {
	m := Membership{
		Application: group.ApplicationCall, CallID: "", Scope: group.ScopeRoom,
		DeviceID: self.DeviceID, MembershipID: self.Identity(),
		Expires: lifetime.Milliseconds(), Intent: "video",
		FocusActive:   Focus{Type: group.FocusLiveKit, FocusSelection: "multi_sfu"},
		FociPreferred: []Focus{{Type: group.FocusLiveKit, ServiceURL: serviceURL, Alias: string(room)}},
	}
	if !created.IsZero() {
		m.CreatedTS = created.UnixMilli()
	}
	return m
}

// Member is a remote device's membership as the machine tracks it.
type Member struct {
	Device
	EventID string
	// Seen is the event's origin_server_ts (zero if unknown); Expires is
	// when the membership lapses (zero: never said).
	Seen    time.Time
	Expires time.Time
	// ServiceURL is the LiveKit JWT service of the SFU the member
	// publishes on in a multi-SFU call (focus_active.focus_selection
	// "multi_sfu": its foci_preferred[0]); "" when it follows the oldest
	// membership's SFU or names none.
	ServiceURL string
}

// DecodeMember reads one call.member state event. left is true for a
// membership that was cleared (empty content); a membership that does not
// belong to its state key's device, or to the room-wide m.call session, is
// an error, as are the shapes js-sdk ignores.
func DecodeMember(ev group.MemberEvent) (m Member, left bool, err error) {
	ec, left, err := group.DecodeElementCallMember(ev)
	if err != nil {
		return m, false, fmt.Errorf("%w: %w", ErrMalformed, err)
	}
	m = Member{Device: Device{User: ev.Sender}, EventID: ev.EventID, Seen: ev.Timestamp}
	if left {
		// A cleared membership names no device in its content: take it
		// from the state key.
		if d, ok := deviceOfKey(ev.StateKey, ev.Sender); ok {
			m.DeviceID = d
		}
		return m, true, nil
	}
	if ec.Application != group.ApplicationCall || ec.CallID != "" {
		return m, false, fmt.Errorf("%w: not the room call (application %q, call_id %q)", ErrMalformed, ec.Application, ec.CallID)
	}
	if want := StateKey(Device{User: ev.Sender, DeviceID: ec.DeviceID}); ev.StateKey != want && ev.StateKey != want[1:] {
		return m, false, fmt.Errorf("%w: state key %q is not the sender's device %q", ErrMalformed, ev.StateKey, ec.DeviceID)
	}
	m.DeviceID, m.Expires = ec.DeviceID, ec.Expires
	m.ServiceURL = publishedOn(ev.Content)
	return m, false, nil
}

// publishedOn is the service URL of the transport a multi-SFU member
// publishes on (js-sdk CallMembership.getTransport: with focus_selection
// "multi_sfu" the member's own foci_preferred[0]); "" otherwise. Only an
// http(s) URL is taken: it is where the intercom will ask for a token.
func publishedOn(content []byte) string {
	var c struct {
		FocusActive struct {
			FocusSelection string `json:"focus_selection"`
		} `json:"focus_active"`
		FociPreferred []Focus `json:"foci_preferred"`
	}
	if json.Unmarshal(content, &c) != nil || c.FocusActive.FocusSelection != "multi_sfu" || len(c.FociPreferred) == 0 {
		return ""
	}
	f := c.FociPreferred[0]
	if f.Type != group.FocusLiveKit || len(f.ServiceURL) > 2048 {
		return ""
	}
	if u, err := url.Parse(f.ServiceURL); err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return ""
	}
	return strings.TrimRight(f.ServiceURL, "/")
}

// deviceOfKey extracts the device from "_<user>_<device>_m.call" (or the
// form without the leading underscore) when user is the sender.
func deviceOfKey(key string, user callengine.UserID) (string, bool) {
	for _, prefix := range []string{"_" + string(user) + "_", string(user) + "_"} {
		const suffix = "_m.call"
		if len(key) > len(prefix)+len(suffix) && key[:len(prefix)] == prefix && key[len(key)-len(suffix):] == suffix {
			return key[len(prefix) : len(key)-len(suffix)], true
		}
	}
	return "", false
}

// DecodeDecline returns the notification event a decline refers to.
func DecodeDecline(content []byte) (notification string, err error) {
	if len(content) > MaxDeclineBytes {
		return "", fmt.Errorf("%w: decline is %d bytes", ErrMalformed, len(content))
	}
	var c struct {
		RelatesTo *group.Relation `json:"m.relates_to"`
	}
	if err := json.Unmarshal(content, &c); err != nil {
		return "", fmt.Errorf("%w: decline: %v", ErrMalformed, err)
	}
	if c.RelatesTo == nil || c.RelatesTo.RelType != "m.reference" || c.RelatesTo.EventID == "" {
		return "", fmt.Errorf("%w: decline needs an m.reference relation", ErrMalformed)
	}
	return c.RelatesTo.EventID, nil
}

// NewRing is the ring (MSC4075 org.matrix.msc4075.rtc.notification) for
// target, referring to the intercom's membership event there. It mentions
// both the residents rung in that room and the whole room, because
// neither alone pushes everywhere (matrix-voip.md §9): the ring has no
// push rule of its own, so a phone is pushed only through
// .m.rule.is_user_mention or .m.rule.is_room_mention; Dendrite (and
// Synapse in some versions) lacks those server-side, where only the
// client's own is_room_mention fires; that one needs the sender to hold
// the room's notifications.room power level, which the intercom has in
// the direct rooms it created (power 100) but maybe not in a household
// room somebody else made, where the user mentions still push on servers
// that have the rule.
func NewRing(t Target, membershipEvent string, now time.Time, lifetime time.Duration) group.Notification {
	n := group.NewRing(membershipEvent, now, lifetime)
	n.SlotID = Slot
	users := make([]string, len(t.Residents))
	for i, u := range t.Residents {
		users[i] = string(u)
	}
	n.Mentions = group.Mentions{UserIDs: users, Room: true}
	return n
}

// TypePowerLevels is the room's power levels (Matrix spec,
// m.room.power_levels).
const TypePowerLevels = "m.room.power_levels"

// DefaultRoomNotifyLevel is the power level @room mentions need when the
// power levels do not say (Matrix spec, m.room.power_levels:
// notifications.room defaults to 50).
const DefaultRoomNotifyLevel = 50

// MaxPowerLevelsBytes bounds the power levels read; the spec's limit
// for a whole event is 64 KiB.
const MaxPowerLevelsBytes = 64 << 10

// RoomNotifyPower reads m.room.power_levels content: the power user holds
// (users[user], else users_default, else 0) and the level a room mention
// needs (notifications.room, else 50). Levels may be JSON integers or, in
// rooms of versions before 10, strings of an integer, which is how
// servers still read them; anything else is malformed.
func RoomNotifyPower(content []byte, user callengine.UserID) (have, need int64, err error) {
	if len(content) > MaxPowerLevelsBytes {
		return 0, 0, fmt.Errorf("%w: power levels are %d bytes", ErrMalformed, len(content))
	}
	var c struct {
		Users         map[string]json.RawMessage `json:"users"`
		UsersDefault  json.RawMessage            `json:"users_default"`
		Notifications map[string]json.RawMessage `json:"notifications"`
	}
	if err := json.Unmarshal(content, &c); err != nil {
		return 0, 0, fmt.Errorf("%w: power levels: %v", ErrMalformed, err)
	}
	level := func(raw json.RawMessage, dflt int64, what string) (int64, error) {
		if len(raw) == 0 || string(raw) == "null" {
			return dflt, nil
		}
		v, err := powerLevel(raw)
		if err != nil {
			return 0, fmt.Errorf("%w: power levels: %s: %v", ErrMalformed, what, err)
		}
		return v, nil
	}
	if have, err = level(c.UsersDefault, 0, "users_default"); err != nil {
		return 0, 0, err
	}
	if raw, ok := c.Users[string(user)]; ok {
		if have, err = level(raw, have, "users"); err != nil {
			return 0, 0, err
		}
	}
	if need, err = level(c.Notifications["room"], DefaultRoomNotifyLevel, "notifications.room"); err != nil {
		return 0, 0, err
	}
	return have, need, nil
}

// powerLevel is one level: an integer, or a string holding one.
func powerLevel(raw json.RawMessage) (int64, error) {
	var s string
	if json.Unmarshal(raw, &s) == nil {
		raw = json.RawMessage(strings.TrimSpace(s))
	}
	var v int64
	if err := json.Unmarshal(raw, &v); err != nil {
		return 0, fmt.Errorf("not an integer: %.32s", raw)
	}
	return v, nil
}
