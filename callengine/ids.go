package callengine

// Typed identifiers keep room, user and call IDs from being mixed up. They
// carry Matrix identifiers verbatim; the Matrix adapter converts them to and
// from mautrix's id types.
type (
	// RoomID is a Matrix room ID such as "!abc:example.org".
	RoomID string
	// UserID is a Matrix user ID such as "@alice:example.org".
	UserID string
	// CallID is the call_id shared by every event of one call.
	CallID string
	// PartyID identifies one device of a call participant (spec v1 party_id).
	PartyID string
)
