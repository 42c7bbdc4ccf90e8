package matrix

import (
	"context"

	"github.com/doorbell/intercom/callengine"
)

var _ callengine.Transport = (*Session)(nil)

// SendRoomEvent sends content as a message event of type eventType into
// room. content is marshalled once with encoding/json and sent verbatim.
//
// Transient failures (connection errors, 5xx, 429 with its retry_after)
// are retried a few times within about ten seconds, always with the same
// transaction ID, so a retry after a lost response cannot duplicate the
// event (Matrix spec, "Transaction identifiers").
func (s *Session) SendRoomEvent(ctx context.Context, room callengine.RoomID, eventType string, content any) error {
	_, err := s.SendEvent(ctx, room, eventType, content)
	return err
}
