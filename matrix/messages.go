package matrix

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"image/jpeg"
	"strings"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/crypto/attachment"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/doorbell/intercom/callengine"
)

// messageEventTypes are the room events Run delivers with Options.Messages:
// instant messages (Matrix spec, "Instant Messaging": m.room.message) and
// annotations (spec v1.7 "Event annotations and reactions": m.reaction).
var messageEventTypes = []string{event.EventMessage.Type, event.EventReaction.Type}

func isMessageEventType(t string) bool {
	return t == event.EventMessage.Type || t == event.EventReaction.Type
}

// MessageKind says what a parsed room message is.
type MessageKind int

const (
	// KindText is an m.room.message of msgtype m.text that is not an edit.
	KindText MessageKind = iota + 1
	// KindReaction is an m.reaction with an m.annotation relation.
	KindReaction
)

// Message is the part of an m.room.message or m.reaction the intercom acts
// on.
type Message struct {
	Kind MessageKind
	// Body is the plain-text body of a KindText message.
	Body string
	// Key and Target are a reaction's annotation: the key (usually an
	// emoji) and the ID of the event it annotates.
	Key, Target string
}

// ParseMessage reads a delivered m.room.message or m.reaction. ok is false
// for everything the intercom does not act on: other types, other
// msgtypes (m.notice is what bots send, so two bots never talk to each
// other in a loop), edits (an edit changes an old message, it is not a new
// one; spec "Event replacements"), redacted or malformed content, and
// reactions other than annotations.
func ParseMessage(ev callengine.RoomEvent) (m Message, ok bool) {
	switch ev.Type {
	case event.EventMessage.Type:
		var c struct {
			MsgType   string `json:"msgtype"`
			Body      string `json:"body"`
			RelatesTo *struct {
				RelType string `json:"rel_type"`
			} `json:"m.relates_to"`
			NewContent json.RawMessage `json:"m.new_content"`
		}
		if json.Unmarshal(ev.Content, &c) != nil || c.MsgType != string(event.MsgText) {
			return Message{}, false
		}
		if c.NewContent != nil || (c.RelatesTo != nil && c.RelatesTo.RelType == string(event.RelReplace)) {
			return Message{}, false
		}
		return Message{Kind: KindText, Body: c.Body}, true
	case event.EventReaction.Type:
		var c struct {
			RelatesTo struct {
				RelType string `json:"rel_type"`
				EventID string `json:"event_id"`
				Key     string `json:"key"`
			} `json:"m.relates_to"`
		}
		if json.Unmarshal(ev.Content, &c) != nil || c.RelatesTo.RelType != string(event.RelAnnotation) ||
			c.RelatesTo.EventID == "" || c.RelatesTo.Key == "" {
			return Message{}, false
		}
		return Message{Kind: KindReaction, Key: c.RelatesTo.Key, Target: c.RelatesTo.EventID}, true
	}
	return Message{}, false
}

// SendEvent is SendRoomEvent that also returns the new event's ID.
func (s *Session) SendEvent(ctx context.Context, room callengine.RoomID, eventType string, content any) (string, error) {
	return s.sendEvent(ctx, room, eventType, content, fmt.Sprintf("%s.%d", s.txnPrefix, s.txnSeq.Add(1)))
}

// onceTxn is the transaction ID of a message sent "once" under key: the
// same key gives the same ID in every run of the intercom (a hash, so the
// key's own characters never reach a URL). A homeserver answers a repeated
// transaction ID of the same device with the event it already made
// (Matrix spec, "Transaction identifiers") for as long as it remembers
// it: Synapse and Dendrite keep them for tens of minutes, so a send
// repeated after a crash and restart posts nothing twice.
func onceTxn(key string) string {
	sum := sha256.Sum256([]byte(key))
	return "intercom.once." + hex.EncodeToString(sum[:16])
}

// SendTextOnce is SendText under a transaction ID made from key (onceTxn):
// for a message that must not be posted twice although its sender may
// send it again after a restart (a kept missed-visitor notice).
func (s *Session) SendTextOnce(ctx context.Context, room callengine.RoomID, text string, notify bool, key string) (string, error) {
	return s.sendEvent(ctx, room, event.EventMessage.Type, textContent(text, notify), onceTxn(key))
}

// SendJPEGOnce is SendJPEG with the m.image event sent as SendTextOnce
// sends. The upload itself is not deduplicated: a repeat leaves an unused
// copy in the media repository, not a second message.
func (s *Session) SendJPEGOnce(ctx context.Context, room callengine.RoomID, body, name string, data []byte, key string) (string, error) {
	content, err := s.imageContent(ctx, room, body, name, data)
	if err != nil {
		return "", err
	}
	return s.sendEvent(ctx, room, event.EventMessage.Type, content, onceTxn(key))
}

// sendEvent sends content under transaction ID txn.
func (s *Session) sendEvent(ctx context.Context, room callengine.RoomID, eventType string, content any, txn string) (string, error) {
	body, err := json.Marshal(content)
	if err != nil {
		return "", fmt.Errorf("marshal %s content: %w", eventType, err)
	}
	typ := event.Type{Type: eventType, Class: event.MessageEventType}
	var sealed any // what goes out: body, or its encryption (e2ee.go)
	var eventID string
	err = s.do(ctx, "send "+eventType, sendPolicy, func(ctx context.Context) error {
		c, err := s.client()
		if err != nil {
			return err
		}
		if sealed == nil {
			// Encrypted once: a retry sends the same ciphertext under
			// the same transaction ID.
			if e := s.crypt.Load(); e != nil {
				if typ, sealed, err = e.seal(ctx, id.RoomID(room), eventType, body); err != nil {
					return err
				}
			} else {
				sealed = json.RawMessage(body)
			}
		}
		resp, err := c.SendMessageEvent(ctx, id.RoomID(room), typ, sealed,
			mautrix.ReqSendEvent{TransactionID: txn})
		if err == nil && resp != nil {
			eventID = string(resp.EventID)
		}
		return err
	})
	if err != nil {
		return "", fmt.Errorf("send %s to %s: %w", eventType, room, err)
	}
	return eventID, nil
}

// SendText sends an m.room.message: msgtype m.text when notify is set
// (residents' push rules notify them), else m.notice (Matrix spec,
// "m.notice": for automated messages, not notified by default).
func (s *Session) SendText(ctx context.Context, room callengine.RoomID, text string, notify bool) (string, error) {
	return s.SendEvent(ctx, room, event.EventMessage.Type, textContent(text, notify))
}

// textContent is the content SendText sends.
func textContent(text string, notify bool) map[string]any {
	mt := event.MsgNotice
	if notify {
		mt = event.MsgText
	}
	return map[string]any{"msgtype": mt, "body": text}
}

// maxUpload bounds an image the intercom uploads; a snapshot is a few tens
// of kilobytes, homeservers commonly refuse more than 50 MB.
const maxUpload = 8 << 20

// UploadJPEG stores a JPEG image in the homeserver's media repository
// (Matrix spec, "Content repository": POST /_matrix/media/v3/upload) and
// returns its mxc:// URI.
func (s *Session) UploadJPEG(ctx context.Context, name string, data []byte) (string, error) {
	return s.upload(ctx, name, "image/jpeg", data)
}

// upload stores data in the media repository and returns its mxc:// URI.
func (s *Session) upload(ctx context.Context, name, mime string, data []byte) (string, error) {
	if len(data) == 0 || len(data) > maxUpload {
		return "", fmt.Errorf("upload %s: %d bytes", name, len(data))
	}
	var uri string
	err := s.do(ctx, "upload "+name, sendPolicy, func(ctx context.Context) error {
		c, err := s.client()
		if err != nil {
			return err
		}
		resp, err := c.UploadBytesWithName(ctx, data, mime, name)
		if err == nil && resp != nil {
			uri = resp.ContentURI.String()
		}
		return err
	})
	if err != nil {
		return "", fmt.Errorf("upload %s: %w", name, err)
	}
	if !strings.HasPrefix(uri, "mxc://") {
		return "", fmt.Errorf("upload %s: homeserver returned content URI %q", name, uri)
	}
	return uri, nil
}

// SendJPEG uploads a JPEG image and sends it as an m.image message
// (Matrix spec, "m.image") with its size and dimensions, so clients can
// lay it out before they download it. body is the text clients without
// images show.
func (s *Session) SendJPEG(ctx context.Context, room callengine.RoomID, body, name string, data []byte) (string, error) {
	content, err := s.imageContent(ctx, room, body, name, data)
	if err != nil {
		return "", err
	}
	return s.SendEvent(ctx, room, event.EventMessage.Type, content)
}

// imageContent uploads data (encrypted in an encrypted room) and returns
// the m.image content that shows it.
func (s *Session) imageContent(ctx context.Context, room callengine.RoomID, body, name string, data []byte) (map[string]any, error) {
	cfg, err := jpeg.DecodeConfig(bytes.NewReader(data))
	if err != nil {
		return nil, fmt.Errorf("send image %s: not a JPEG: %w", name, err)
	}
	content := map[string]any{
		"msgtype":  event.MsgImage,
		"body":     body,
		"filename": name,
		"info": map[string]any{
			"mimetype": "image/jpeg",
			"size":     len(data),
			"w":        cfg.Width,
			"h":        cfg.Height,
		},
	}
	if e := s.crypt.Load(); e != nil && e.roomEncrypted(ctx, id.RoomID(room)) {
		// An encrypted room gets an encrypted attachment (Matrix spec,
		// "Sending encrypted attachments"): the homeserver stores only
		// ciphertext, and the key travels inside the encrypted event.
		file := attachment.NewEncryptedFile()
		uri, err := s.upload(ctx, name, "application/octet-stream", file.Encrypt(data))
		if err != nil {
			return nil, err
		}
		content["file"] = &event.EncryptedFileInfo{EncryptedFile: *file, URL: id.ContentURIString(uri)}
	} else {
		uri, err := s.UploadJPEG(ctx, name, data)
		if err != nil {
			return nil, err
		}
		content["url"] = uri
	}
	return content, nil
}
