package group

import (
	"encoding/json"
	"fmt"
	"math"
	"strings"
	"time"

	"github.com/doorbell/intercom/callengine"
)

// Event types of group-call membership.
const (
	// TypeMember is famedly's membership state event
	// (dart-sdk EventTypes.GroupCallMember; matrix-voip.md §4.4). Element
	// Call and js-sdk do not read it.
	TypeMember = "com.famedly.call.member"
	// TypeElementCallMember is Element Call's per-device membership
	// (matrix-voip.md §4.2). Its media path is LiveKit: the intercom only
	// reports these members.
	TypeElementCallMember = "org.matrix.msc3401.call.member"
)

// Membership constants (dart-sdk utils/voip_constants.dart,
// models/call_membership.dart).
const (
	ApplicationCall = "m.call"
	ScopeRoom       = "m.room"
	FocusMesh       = "mesh"
	FocusLiveKit    = "livekit"
	// ExpireBump is how far ahead expires_ts is set
	// (expireTsBumpDuration, 6 min).
	ExpireBump = 6 * time.Minute
	// RefreshInterval is how often the own membership is re-sent with a
	// new expires_ts (updateExpireTsTimerDuration, 2 min).
	RefreshInterval = 2 * time.Minute
	// ExpiryGrace: an entry only counts as expired once
	// expires_ts < now − 6 min (dart-sdk isExpired).
	ExpiryGrace = 6 * time.Minute
	// MaxMemberships bounds the entries read from one state event.
	MaxMemberships = 64
	// MaxMemberBytes bounds the content of one membership state event.
	MaxMemberBytes = 64 << 10
)

// Focus is one entry of foci_active: the media backend of a membership.
// Mesh is {"type":"mesh"}; a LiveKit focus must carry both livekit_alias
// and livekit_service_url (dart-sdk throws otherwise).
type Focus struct {
	Type              string `json:"type"`
	LiveKitServiceURL string `json:"livekit_service_url,omitempty"`
	LiveKitAlias      string `json:"livekit_alias,omitempty"`
}

// Feed is one entry of feeds.
type Feed struct {
	Purpose string `json:"purpose"`
}

// Membership is one entry of a com.famedly.call.member event's
// memberships list (dart-sdk CallMembership.toJson).
type Membership struct {
	CallID       string  `json:"call_id"`
	Application  string  `json:"application"`
	Scope        string  `json:"scope"`
	FociActive   []Focus `json:"foci_active"`
	DeviceID     string  `json:"device_id"`
	ExpiresTS    int64   `json:"expires_ts"`
	MembershipID string  `json:"membershipID"`
	Feeds        []Feed  `json:"feeds,omitempty"`
}

// MemberContent is the content of com.famedly.call.member. Leaving is the
// list without the device; an empty list means the user has no device in
// any call.
type MemberContent struct {
	Memberships []Membership `json:"memberships"`
}

// Expires is the absolute expiry, expires_ts.
func (m Membership) Expires() time.Time { return time.UnixMilli(m.ExpiresTS) }

// Expired reports whether the entry no longer counts at now: famedly
// honours expires_ts only after a grace of ExpiryGrace.
func (m Membership) Expired(now time.Time) bool {
	return m.Expires().Add(ExpiryGrace).Before(now)
}

// Mesh reports whether the entry's backend is the to-device mesh.
func (m Membership) Mesh() bool {
	for _, f := range m.FociActive {
		if f.Type == FocusMesh {
			return true
		}
	}
	return false
}

// StateKeyKind is which of famedly's state key conventions an event used
// (dart-sdk utils/famedly_call_extension.dart).
type StateKeyKind int

const (
	// KeyUser is the default: state_key = userId, one event per user
	// holding the list of that user's devices.
	KeyUser StateKeyKind = iota
	// KeyUserDevice is "<userId>_<deviceId>", used when the room version
	// contains msc3757.
	KeyUserDevice
	// KeyDeviceUser is "<deviceId>_<userId>"
	// (useUnprotectedPerDeviceStateKeys).
	KeyDeviceUser
)

// OwnStateKey is the state key the intercom publishes under: its user ID,
// famedly's default. The intercom's account has a single device, so the
// list holds only its own entry.
func OwnStateKey(user callengine.UserID) string { return string(user) }

// ParseStateKey tells which convention key follows for sender, and the
// device it names for the per-device forms. A key that belongs to another
// user gives ErrStateKey: a state key of another user could otherwise be
// used to plant memberships for them (servers only protect "@"-prefixed
// keys).
func ParseStateKey(key string, sender callengine.UserID) (StateKeyKind, string, error) {
	s := string(sender)
	switch {
	case s == "":
		return 0, "", fmt.Errorf("%w: empty sender", ErrStateKey)
	case key == s:
		return KeyUser, "", nil
	case strings.HasPrefix(key, s+"_") && len(key) > len(s)+1:
		return KeyUserDevice, key[len(s)+1:], nil
	case strings.HasSuffix(key, "_"+s) && len(key) > len(s)+1:
		return KeyDeviceUser, key[:len(key)-len(s)-1], nil
	}
	return 0, "", fmt.Errorf("%w: %q sent by %s", ErrStateKey, key, sender)
}

// MemberEvent is a membership state event as the Matrix adapter delivers
// it: raw and untrusted.
type MemberEvent struct {
	Type      string // TypeMember or TypeElementCallMember
	StateKey  string
	Sender    callengine.UserID
	Content   json.RawMessage
	Timestamp time.Time // origin_server_ts; zero if unknown
	EventID   string
}

// DecodeMember parses a com.famedly.call.member event. Entries are checked
// one by one like dart-sdk's isValidMemEvent (string call_id and
// device_id, numeric expires_ts, a foci_active list; a livekit focus with
// both livekit_alias and livekit_service_url): invalid entries are
// dropped, not the whole event. For the per-device key forms, entries for
// another device than the key names are dropped too. Content that is not
// an object with a memberships list (or {} after a redaction) is refused.
func DecodeMember(stateKey string, sender callengine.UserID, content []byte) ([]Membership, error) {
	_, keyDevice, err := ParseStateKey(stateKey, sender)
	if err != nil {
		return nil, err
	}
	if len(content) > MaxMemberBytes {
		return nil, fmt.Errorf("%w: membership content is %d bytes", ErrMalformed, len(content))
	}
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(content, &raw); err != nil || raw == nil {
		return nil, fmt.Errorf("%w: membership content is not an object", ErrMalformed)
	}
	list, ok := raw["memberships"]
	if !ok {
		return nil, nil // {}: redacted or cleared, no devices
	}
	var entries []json.RawMessage
	if err := json.Unmarshal(list, &entries); err != nil {
		return nil, fmt.Errorf("%w: memberships is not a list", ErrMalformed)
	}
	if len(entries) > MaxMemberships {
		return nil, fmt.Errorf("%w: %d memberships, at most %d", ErrMalformed, len(entries), MaxMemberships)
	}
	var out []Membership
	for _, e := range entries {
		m, err := decodeEntry(e)
		if err != nil {
			continue
		}
		if keyDevice != "" && m.DeviceID != keyDevice {
			continue
		}
		out = append(out, m)
	}
	return out, nil
}

func decodeEntry(raw json.RawMessage) (Membership, error) {
	var e struct {
		CallID       *string            `json:"call_id"`
		Application  *string            `json:"application"`
		Scope        *string            `json:"scope"`
		FociActive   *[]json.RawMessage `json:"foci_active"`
		DeviceID     *string            `json:"device_id"`
		ExpiresTS    json.RawMessage    `json:"expires_ts"`
		MembershipID *string            `json:"membershipID"`
		Feeds        []Feed             `json:"feeds"`
	}
	if err := json.Unmarshal(raw, &e); err != nil {
		return Membership{}, err
	}
	if e.CallID == nil || e.DeviceID == nil || len(e.ExpiresTS) == 0 || e.FociActive == nil {
		return Membership{}, fmt.Errorf("missing call_id, device_id, expires_ts or foci_active")
	}
	if *e.DeviceID == "" || len(*e.DeviceID) > callengine.MaxIDBytes || len(*e.CallID) > callengine.MaxIDBytes {
		return Membership{}, fmt.Errorf("bad device_id or call_id")
	}
	var f float64
	if c := e.ExpiresTS[0]; c != '-' && (c < '0' || c > '9') {
		return Membership{}, fmt.Errorf("expires_ts is not a number")
	}
	if err := json.Unmarshal(e.ExpiresTS, &f); err != nil || math.IsNaN(f) || f < 0 || f > 1<<53 {
		return Membership{}, fmt.Errorf("expires_ts out of range")
	}
	m := Membership{CallID: *e.CallID, DeviceID: *e.DeviceID, ExpiresTS: int64(f), Feeds: e.Feeds}
	if e.Application != nil {
		m.Application = *e.Application
	}
	if e.Scope != nil {
		m.Scope = *e.Scope
	}
	if e.MembershipID != nil {
		m.MembershipID = *e.MembershipID
	}
	if len(m.MembershipID) > callengine.MaxIDBytes {
		return Membership{}, fmt.Errorf("membershipID too long")
	}
	for _, rf := range *e.FociActive {
		var fo Focus
		if json.Unmarshal(rf, &fo) != nil {
			return Membership{}, fmt.Errorf("focus is not an object")
		}
		if fo.Type == FocusLiveKit && (fo.LiveKitAlias == "" || fo.LiveKitServiceURL == "") {
			return Membership{}, fmt.Errorf("livekit focus without alias or service url")
		}
		m.FociActive = append(m.FociActive, fo)
	}
	return m, nil
}

// NewOwnMembership is the entry the intercom publishes: the room-wide call
// of room (call_id = room ID, as dart-sdk does for the room's call), mesh
// backend, expiring ExpireBump after now.
func NewOwnMembership(room callengine.RoomID, device, session string, now time.Time) Membership {
	return Membership{
		CallID:       string(room),
		Application:  ApplicationCall,
		Scope:        ScopeRoom,
		FociActive:   []Focus{{Type: FocusMesh}},
		DeviceID:     device,
		ExpiresTS:    now.Add(ExpireBump).UnixMilli(),
		MembershipID: session,
		Feeds:        []Feed{{Purpose: callengine.StreamPurposeUserMedia}},
	}
}

// ElementCallMember is what the intercom reads of an Element Call
// per-device membership (§4.2), for the status only.
type ElementCallMember struct {
	User        callengine.UserID `json:"user_id"`
	DeviceID    string            `json:"device_id"`
	CallID      string            `json:"call_id"`
	Application string            `json:"application"`
	Focus       string            `json:"focus"`
	Expires     time.Time         `json:"expires"`
}

// ElementCallDefaultExpiry is js-sdk's DEFAULT_EXPIRE_DURATION (4 h).
const ElementCallDefaultExpiry = 4 * time.Hour

// DecodeElementCallMember parses an org.matrix.msc3401.call.member event
// in Element Call's session form. left is true for content without keys
// (a leave). The older {"memberships":[…]} and {"m.calls":[…]} shapes are
// refused, as js-sdk ignores them.
func DecodeElementCallMember(ev MemberEvent) (m ElementCallMember, left bool, err error) {
	if len(ev.Content) > MaxMemberBytes {
		return m, false, fmt.Errorf("%w: content is %d bytes", ErrMalformed, len(ev.Content))
	}
	var raw map[string]json.RawMessage
	if json.Unmarshal(ev.Content, &raw) != nil || raw == nil {
		return m, false, fmt.Errorf("%w: content is not an object", ErrMalformed)
	}
	if len(raw) == 0 {
		return m, true, nil
	}
	var c struct {
		Application *string `json:"application"`
		CallID      *string `json:"call_id"`
		DeviceID    *string `json:"device_id"`
		FocusActive *struct {
			Type *string `json:"type"`
		} `json:"focus_active"`
		Expires   *float64 `json:"expires"`
		CreatedTS *float64 `json:"created_ts"`
	}
	if err := json.Unmarshal(ev.Content, &c); err != nil {
		return m, false, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	if c.Application == nil || c.CallID == nil || c.DeviceID == nil || c.FocusActive == nil || c.FocusActive.Type == nil {
		return m, false, fmt.Errorf("%w: needs application, call_id, device_id and focus_active.type", ErrMalformed)
	}
	created := ev.Timestamp
	if c.CreatedTS != nil && *c.CreatedTS > 0 && *c.CreatedTS < 1<<53 {
		created = time.UnixMilli(int64(*c.CreatedTS))
	}
	expires := ElementCallDefaultExpiry
	if c.Expires != nil && *c.Expires > 0 && *c.Expires < 1<<40 {
		expires = time.Duration(*c.Expires) * time.Millisecond
	}
	m = ElementCallMember{User: ev.Sender, DeviceID: *c.DeviceID, CallID: *c.CallID,
		Application: *c.Application, Focus: *c.FocusActive.Type}
	if !created.IsZero() {
		m.Expires = created.Add(expires)
	}
	return m, false, nil
}
