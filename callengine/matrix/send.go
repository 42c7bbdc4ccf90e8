package matrix

import (
	"context"
	"encoding/json"
	"fmt"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

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
	body, err := json.Marshal(content)
	if err != nil {
		return fmt.Errorf("marshal %s content: %w", eventType, err)
	}
	txn := fmt.Sprintf("%s.%d", s.txnPrefix, s.txnSeq.Add(1))
	typ := event.Type{Type: eventType, Class: event.MessageEventType}
	err = s.do(ctx, "send "+eventType, sendPolicy, func(ctx context.Context) error {
		c, err := s.client()
		if err != nil {
			return err
		}
		// A json.RawMessage is written to the request as it is, so
		// mautrix never re-encodes the content.
		_, err = c.SendMessageEvent(ctx, id.RoomID(room), typ, json.RawMessage(body),
			mautrix.ReqSendEvent{TransactionID: txn})
		return err
	})
	if err != nil {
		return fmt.Errorf("send %s to %s: %w", eventType, room, err)
	}
	return nil
}
