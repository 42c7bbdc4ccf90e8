package matrix

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"image"
	_ "image/jpeg" // image.DecodeConfig of JPEG avatars
	_ "image/png"  // and of PNG ones
	"net/http"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/doorbell/intercom/callengine"
)

// RoomLook is how the intercom's direct rooms appear in residents' room
// lists: a name (m.room.name) and an optional avatar (m.room.avatar).
type RoomLook struct {
	// Name is the room's name; "" leaves the name alone.
	Name string
	// Avatar is a PNG or JPEG image; nil leaves the avatar alone.
	Avatar []byte
}

// avatarHashKey is an extra key the intercom puts into the m.room.avatar
// content it sends: the SHA-256 of the image it uploaded. A later run reads
// it to tell that the room still shows that image without downloading the
// image again, so an unchanged avatar is never uploaded twice (the spec
// allows extra keys in event content; clients ignore them). An avatar set
// by anyone else lacks it and is replaced.
const avatarHashKey = "org.doorbell.intercom.sha256"

// maxAvatar bounds an avatar image; room avatars are shown at 32–96 px,
// and a megabyte is generous for that.
const maxAvatar = 1 << 20

// CheckAvatar reports whether data is an image the intercom can use as a
// room avatar (PNG or JPEG, at most 1 MiB) and returns its MIME type and
// size in pixels.
func CheckAvatar(data []byte) (mime string, w, h int, err error) {
	if len(data) == 0 || len(data) > maxAvatar {
		return "", 0, 0, fmt.Errorf("avatar: %d bytes; want 1 byte to %d KiB", len(data), maxAvatar>>10)
	}
	switch mime = http.DetectContentType(data); mime {
	case "image/png", "image/jpeg":
	default:
		return "", 0, 0, fmt.Errorf("avatar: %s, not a PNG or JPEG image", mime)
	}
	cfg, _, err := image.DecodeConfig(bytes.NewReader(data))
	if err != nil {
		return "", 0, 0, fmt.Errorf("avatar: %w", err)
	}
	return mime, cfg.Width, cfg.Height, nil
}

// EnsureRoomLook gives room look's name and avatar where they differ
// (Matrix spec, "m.room.name", "m.room.avatar") and names what it changed:
// "name", "avatar". A second call with the same look changes nothing. The
// avatar is uploaded at most once per Session for all rooms.
func (s *Session) EnsureRoomLook(ctx context.Context, room callengine.RoomID, look RoomLook) ([]string, error) {
	c, err := s.client()
	if err != nil {
		return nil, err
	}
	rid := id.RoomID(room)
	var changed []string
	if look.Name != "" {
		var cur event.RoomNameEventContent
		found, err := s.roomState(ctx, c, rid, event.StateRoomName, &cur)
		if err != nil {
			return nil, err
		}
		if !found || cur.Name != look.Name {
			if err := s.putState(ctx, c, rid, event.StateRoomName, &event.RoomNameEventContent{Name: look.Name}); err != nil {
				return nil, err
			}
			changed = append(changed, "name")
		}
	}
	if look.Avatar != nil {
		mime, w, h, err := CheckAvatar(look.Avatar)
		if err != nil {
			return changed, err
		}
		sum := sha256.Sum256(look.Avatar)
		hash := hex.EncodeToString(sum[:])
		var cur map[string]any
		found, err := s.roomState(ctx, c, rid, event.StateRoomAvatar, &cur)
		if err != nil {
			return changed, err
		}
		if url, _ := cur["url"].(string); !found || url == "" || cur[avatarHashKey] != hash {
			uri, err := s.uploadAvatar(ctx, c, hash, mime, look.Avatar)
			if err != nil {
				return changed, err
			}
			content := map[string]any{
				"url":         uri,
				"info":        map[string]any{"mimetype": mime, "size": len(look.Avatar), "w": w, "h": h},
				avatarHashKey: hash,
			}
			if err := s.putState(ctx, c, rid, event.StateRoomAvatar, content); err != nil {
				return changed, err
			}
			changed = append(changed, "avatar")
		}
	}
	if len(changed) > 0 {
		s.log.Info("room look repaired", "room_id", room, "changed", changed)
	}
	return changed, nil
}

// roomState reads a state event of room with an empty state key into out;
// found is false when the room has none.
func (s *Session) roomState(ctx context.Context, c *mautrix.Client, room id.RoomID, typ event.Type, out any) (found bool, err error) {
	err = s.do(ctx, "get "+typ.Type, loopPolicy, func(ctx context.Context) error {
		return c.StateEvent(ctx, room, typ, "", out)
	})
	if errors.Is(err, mautrix.MNotFound) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("read %s of %s: %w", typ.Type, room, err)
	}
	return true, nil
}

func (s *Session) putState(ctx context.Context, c *mautrix.Client, room id.RoomID, typ event.Type, content any) error {
	err := s.do(ctx, "put "+typ.Type, sendPolicy, func(ctx context.Context) error {
		_, err := c.SendStateEvent(ctx, room, typ, "", content)
		return err
	})
	if err != nil {
		return fmt.Errorf("set %s of %s: %w", typ.Type, room, err)
	}
	return nil
}

// uploadAvatar uploads the avatar once per Session and content.
func (s *Session) uploadAvatar(ctx context.Context, c *mautrix.Client, hash, mime string, data []byte) (string, error) {
	s.mu.Lock()
	uri, ok := s.avatars[hash]
	s.mu.Unlock()
	if ok {
		return uri, nil
	}
	name := "intercom-avatar.png"
	if mime == "image/jpeg" {
		name = "intercom-avatar.jpg"
	}
	err := s.do(ctx, "upload avatar", sendPolicy, func(ctx context.Context) error {
		resp, err := c.UploadBytesWithName(ctx, data, mime, name)
		if err == nil && resp != nil {
			uri = resp.ContentURI.String()
		}
		return err
	})
	if err != nil {
		return "", fmt.Errorf("upload avatar: %w", err)
	}
	if uri == "" {
		return "", errors.New("upload avatar: response without content_uri")
	}
	s.mu.Lock()
	if s.avatars == nil {
		s.avatars = map[string]string{}
	}
	s.avatars[hash] = uri
	s.mu.Unlock()
	return uri, nil
}
