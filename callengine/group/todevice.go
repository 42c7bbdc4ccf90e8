package group

import (
	"encoding/json"
	"fmt"
	"maps"
	"strings"

	"github.com/doorbell/intercom/callengine"
)

// Family is the naming of to-device call event types a peer uses
// (matrix-voip.md §4.5): dart-sdk sends com.famedly.call.member.*,
// js-sdk and MSC3401 m.call.*. The intercom accepts both and answers in
// the family the peer used.
type Family int

const (
	// FamilyFamedly is com.famedly.call.member.<name> (dart-sdk
	// event_types.dart), the family the intercom starts calls in: a
	// com.famedly.call.member membership says the peer runs dart-sdk.
	FamilyFamedly Family = iota
	// FamilyMatrix is m.call.<name> (MSC3401 "Call setup").
	FamilyMatrix
)

func (f Family) String() string {
	if f == FamilyMatrix {
		return "m.call"
	}
	return "famedly"
}

const famedlyPrefix = TypeMember + "."

// ToDeviceType names callType (an m.call.* type such as
// callengine.TypeInvite) in family f.
func ToDeviceType(f Family, callType string) string {
	if f == FamilyFamedly {
		return famedlyPrefix + strings.TrimPrefix(callType, "m.call.")
	}
	return callType
}

// ParseToDeviceType maps a to-device type of either family to its m.call.*
// name and family.
func ParseToDeviceType(t string) (callType string, f Family, ok bool) {
	switch {
	case strings.HasPrefix(t, famedlyPrefix) && len(t) > len(famedlyPrefix):
		return "m.call." + t[len(famedlyPrefix):], FamilyFamedly, true
	case strings.HasPrefix(t, "m.call.") && len(t) > len("m.call."):
		return t, FamilyMatrix, true
	}
	return "", 0, false
}

// Envelope holds the fields that to-device call events carry besides the
// 1:1 content (MSC3401 "Call setup"; dart-sdk adds a mandatory room_id,
// §6). device_id is the sender's device; dart-sdk sets it on the invite
// only, js-sdk on every event. seq counts from 0 per sender and call.
type Envelope struct {
	RoomID          callengine.RoomID `json:"room_id"`
	ConfID          string            `json:"conf_id"`
	DeviceID        string            `json:"device_id,omitempty"`
	SenderSessionID string            `json:"sender_session_id"`
	DestSessionID   string            `json:"dest_session_id"`
	Seq             *int64            `json:"seq,omitempty"`
}

// ToDevice is a decoded to-device call event.
type ToDevice struct {
	CallType string // m.call.* name
	Family   Family
	Envelope
	// Call is one of callengine's content pointers (*callengine.Invite, …)
	// as returned by callengine.Decode.
	Call any
}

// CallID returns the call_id of the call content.
func (t ToDevice) CallID() callengine.CallID { return commonOf(t.Call).CallID }

// PartyID returns the party_id of the call content.
func (t ToDevice) PartyID() callengine.PartyID { return commonOf(t.Call).PartyID }

func commonOf(v any) callengine.Common {
	switch x := v.(type) {
	case *callengine.Invite:
		return x.Common
	case *callengine.Answer:
		return x.Common
	case *callengine.Candidates:
		return x.Common
	case *callengine.SelectAnswer:
		return x.Common
	case *callengine.Hangup:
		return x.Common
	case *callengine.Reject:
		return x.Common
	case *callengine.Negotiate:
		return x.Common
	}
	return callengine.Common{}
}

// MaxSeq bounds seq; a larger one is refused (a hostile sender could
// otherwise make the reorder buffer wait for a gap that never fills).
const MaxSeq = 1 << 31

// DecodeToDevice parses and validates a to-device call event of either
// family: the envelope (room_id, conf_id, sender_session_id and
// dest_session_id present and bounded, seq a non-negative integer if
// present) and the call content with callengine.Decode. Whether the event
// is meant for this intercom (room, conference, session) is the machine's
// decision. It never panics (FuzzDecodeToDevice).
func DecodeToDevice(eventType string, content []byte) (ToDevice, error) {
	callType, fam, ok := ParseToDeviceType(eventType)
	if !ok {
		return ToDevice{}, fmt.Errorf("%w: %q", ErrUnknownType, eventType)
	}
	var env Envelope
	if err := json.Unmarshal(content, &env); err != nil {
		return ToDevice{}, fmt.Errorf("%w: %s envelope: %v", ErrMalformed, eventType, err)
	}
	switch {
	case env.RoomID == "":
		return ToDevice{}, fmt.Errorf("%w: %s without room_id", ErrMalformed, eventType)
	case env.ConfID == "":
		return ToDevice{}, fmt.Errorf("%w: %s without conf_id", ErrMalformed, eventType)
	case env.SenderSessionID == "":
		return ToDevice{}, fmt.Errorf("%w: %s without sender_session_id", ErrMalformed, eventType)
	case env.DestSessionID == "":
		return ToDevice{}, fmt.Errorf("%w: %s without dest_session_id", ErrMalformed, eventType)
	case len(env.RoomID) > callengine.MaxIDBytes || len(env.ConfID) > callengine.MaxIDBytes ||
		len(env.DeviceID) > callengine.MaxIDBytes || len(env.SenderSessionID) > callengine.MaxIDBytes ||
		len(env.DestSessionID) > callengine.MaxIDBytes:
		return ToDevice{}, fmt.Errorf("%w: %s envelope field longer than %d bytes", ErrMalformed, eventType, callengine.MaxIDBytes)
	case env.Seq != nil && (*env.Seq < 0 || *env.Seq > MaxSeq):
		return ToDevice{}, fmt.Errorf("%w: %s seq %d out of range", ErrMalformed, eventType, *env.Seq)
	}
	call, err := callengine.Decode(callType, content)
	if err != nil {
		return ToDevice{}, fmt.Errorf("%s: %w", eventType, err)
	}
	return ToDevice{CallType: callType, Family: fam, Envelope: env, Call: call}, nil
}

// EncodeToDevice merges the envelope into the call content: the object
// sent as one device's message. Fields of the envelope win over any of the
// same name in call (there are none in the VoIP schema).
func EncodeToDevice(env Envelope, call any) (json.RawMessage, error) {
	cb, err := json.Marshal(call)
	if err != nil {
		return nil, fmt.Errorf("marshal call content: %w", err)
	}
	eb, err := json.Marshal(env)
	if err != nil {
		return nil, fmt.Errorf("marshal envelope: %w", err)
	}
	var cm, em map[string]json.RawMessage
	if err := json.Unmarshal(cb, &cm); err != nil {
		return nil, fmt.Errorf("call content is not an object: %w", err)
	}
	if err := json.Unmarshal(eb, &em); err != nil {
		return nil, err
	}
	maps.Copy(cm, em)
	return json.Marshal(cm)
}
