package callengine

import (
	"context"
	"encoding/json"
	"time"
)

// RoomEvent is a call event as it arrived from the homeserver, before the
// engine decodes its content. The Matrix adapter fills it from the sync
// response; Content is the raw event content and is untrusted.
type RoomEvent struct {
	ID        string
	Room      RoomID
	Sender    UserID
	Type      string // e.g. "m.call.answer"
	Content   json.RawMessage
	Timestamp time.Time     // origin_server_ts
	Age       time.Duration // unsigned.age at receipt, 0 if absent; negative if the homeserver said so
	// Received is when the /sync response that carried the event
	// arrived, before any decryption; zero if unknown.
	Received time.Time
	// Seal says whether the event arrived end-to-end encrypted and how
	// far its sender's device is trusted. The zero value is a plaintext
	// event in an unencrypted room.
	Seal Seal
}

// Seal is what end-to-end encryption tells about one room event. The
// Matrix adapter fills it from its crypto (Olm/Megolm); the door policy
// reads it. An event that did not decrypt never reaches the call engines
// or the door: the adapter logs it and keeps it back.
type Seal struct {
	// RoomEncrypted: the room has m.room.encryption, so a plaintext event
	// in it was not sent by a resident's client (Element never sends
	// plaintext into an encrypted room); only a homeserver could have put
	// it there.
	RoomEncrypted bool
	// Encrypted: the event arrived as m.room.encrypted and decrypted.
	Encrypted bool
	// Device is the sender's device that holds the session's keys, when
	// the crypto could tie them to one.
	Device string
	// Trust is how far that device is trusted.
	Trust Trust
}

// Trust ranks the sender's device of a decrypted event.
type Trust int

const (
	// TrustNone: plaintext, or keys that could not be tied to a device
	// of the sender (unknown device, forwarded or backed-up keys, keys
	// that do not match the device's).
	TrustNone Trust = iota
	// TrustDevice: the session's keys are those of a device the
	// homeserver lists for the sender, not cross-signed by its user (or
	// cross-signed by an identity that changed since the intercom first
	// saw it).
	TrustDevice
	// TrustCrossSigned: that device is signed by its user's
	// self-signing key, whose master key is the one the intercom first
	// saw for the user (trust on first use) or one it verified.
	TrustCrossSigned
)

func (t Trust) String() string {
	switch t {
	case TrustDevice:
		return "device"
	case TrustCrossSigned:
		return "cross_signed"
	default:
		return "none"
	}
}

// StateEvent is a state event of a room as the homeserver delivered it
// (sync or GET /state); Content is raw and untrusted. The household call
// and MatrixRTC runners read memberships from it; the Matrix adapter fills
// it.
type StateEvent struct {
	Room      RoomID
	ID        string
	Type      string
	StateKey  string
	Sender    UserID
	Content   json.RawMessage
	Timestamp time.Time // origin_server_ts; zero if unknown
}

// Transport sends call signalling into a room. The Matrix adapter
// (package matrix) implements it; tests use an in-memory fake.
type Transport interface {
	// SendRoomEvent sends content, which marshals to JSON, as a message
	// event of type eventType into room.
	SendRoomEvent(ctx context.Context, room RoomID, eventType string, content any) error
}
