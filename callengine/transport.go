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
