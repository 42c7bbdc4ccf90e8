package matrix

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/doorbell/intercom/callengine"
)

// RTCHooks receive what MatrixRTC ringing (callengine/rtc) needs from the
// sync loop, from every joined room. Both run on the sync goroutine and
// must not block.
type RTCHooks struct {
	// StateTypes are the membership state types to deliver (listed by
	// name: Dendrite on SQLite ignores wildcards in filters).
	StateTypes []string
	// State gets those state events, from the state section of each sync
	// (the first one is current state, not backlog) and from timelines.
	State func(StateEvent)
	// EventTypes are room (non-state) event types to deliver, such as
	// declines; Event gets them, except in the first sync without a
	// stored token (backlog) and except the intercom's own.
	EventTypes []string
	Event      func(callengine.RoomEvent)
	// ToDeviceTypes are the to-device event types ToDevice gets (media
	// keys), with every sync; Encrypted tells one that came Olm-encrypted
	// (and names its Device) from one sent in the clear.
	ToDeviceTypes []string
	ToDevice      func(ToDeviceEvent)
}

// SetRTCHooks registers a copy of h; a nil h removes them. Like
// SetHouseholdHooks it may be called while Run is running, but the types
// it adds to the sync filter are asked for from the next Run only.
func (s *Session) SetRTCHooks(h *RTCHooks) {
	if h != nil {
		c := *h
		c.StateTypes, c.EventTypes, c.ToDeviceTypes = slices.Clone(h.StateTypes), slices.Clone(h.EventTypes), slices.Clone(h.ToDeviceTypes)
		h = &c
	}
	s.rtc.Store(h)
}

// rtcFilter adds the hooks' types to the state and timeline filters.
func (s *Session) rtcFilter(f *mautrix.Filter) *mautrix.Filter {
	h := s.rtc.Load()
	if h == nil || f.Room == nil {
		return f
	}
	addTypes(f.Room.State, h.StateTypes...)
	addTypes(f.Room.Timeline, h.StateTypes...)
	addTypes(f.Room.Timeline, h.EventTypes...)
	return f
}

// addTypes adds event types to a filter part, once each.
func addTypes(p *mautrix.FilterPart, names ...string) {
	if p == nil {
		return
	}
	for _, n := range names {
		if !slices.ContainsFunc(p.Types, func(t event.Type) bool { return t.Type == n }) {
			p.Types = append(p.Types, event.Type{Type: n})
		}
	}
}

// handleRTC hands one sync response's membership state and room events to
// h (nil: none), room by room in a stable order.
func (s *Session) handleRTC(h *RTCHooks, resp *householdSync, decrypted []ToDeviceEvent, initial bool) {
	if h == nil {
		return
	}
	if h.ToDevice != nil && len(h.ToDeviceTypes) > 0 {
		for _, r := range resp.ToDevice.Events {
			var e struct {
				Sender  string          `json:"sender"`
				Type    string          `json:"type"`
				Content json.RawMessage `json:"content"`
			}
			if json.Unmarshal(r, &e) == nil && slices.Contains(h.ToDeviceTypes, e.Type) {
				h.ToDevice(ToDeviceEvent{Sender: callengine.UserID(e.Sender), Type: e.Type, Content: e.Content})
			}
		}
		for _, e := range decrypted {
			if slices.Contains(h.ToDeviceTypes, e.Type) {
				h.ToDevice(e)
			}
		}
	}
	var self id.UserID
	if c, err := s.client(); err == nil {
		self = c.UserID
	}
	rooms := make([]id.RoomID, 0, len(resp.Rooms.Join))
	for r := range resp.Rooms.Join {
		rooms = append(rooms, r)
	}
	slices.Sort(rooms)
	for _, room := range rooms {
		j := resp.Rooms.Join[room]
		for _, list := range [][]json.RawMessage{j.State.Events, j.Timeline.Events} {
			for _, raw := range list {
				var e syncEvent
				if json.Unmarshal(raw, &e) != nil {
					continue
				}
				switch {
				case e.StateKey != nil && slices.Contains(h.StateTypes, e.Type) && h.State != nil:
					ev := StateEvent{Room: callengine.RoomID(room), ID: e.ID, Type: e.Type, StateKey: *e.StateKey,
						Sender: callengine.UserID(e.Sender), Content: e.Content}
					if ms := jsonMillis(e.OriginServerTS); ms > 0 {
						ev.Timestamp = time.UnixMilli(ms)
					}
					h.State(ev)
				case e.StateKey == nil && !initial && slices.Contains(h.EventTypes, e.Type) && h.Event != nil && id.UserID(e.Sender) != self:
					h.Event(e.roomEvent(room))
				}
			}
		}
	}
}

// OpenIDToken is what POST /user/{userId}/openid/request_token returns
// (Matrix spec, "OpenID"): proof of the intercom's identity for a third
// party, here a LiveKit JWT service.
type OpenIDToken struct {
	AccessToken      string `json:"access_token"`
	TokenType        string `json:"token_type"`
	MatrixServerName string `json:"matrix_server_name"`
	ExpiresIn        int    `json:"expires_in"`
}

// OpenIDToken asks the homeserver for an OpenID token.
func (s *Session) OpenIDToken(ctx context.Context) (OpenIDToken, error) {
	var tok OpenIDToken
	err := s.do(ctx, "request OpenID token", sendPolicy, func(ctx context.Context) error {
		c, err := s.client()
		if err != nil {
			return err
		}
		resp, err := c.RequestOpenIDToken(ctx)
		if err == nil && resp != nil {
			tok = OpenIDToken{AccessToken: resp.AccessToken, TokenType: resp.TokenType,
				MatrixServerName: resp.MatrixServerName, ExpiresIn: resp.ExpiresIn}
		}
		return err
	})
	if err != nil {
		return OpenIDToken{}, fmt.Errorf("openid token: %w", err)
	}
	return tok, nil
}

// RoomEncrypted reports whether room has end-to-end encryption enabled
// (an m.room.encryption state event).
func (s *Session) RoomEncrypted(ctx context.Context, room callengine.RoomID) (bool, error) {
	ev, err := s.RoomStateEvents(ctx, room, event.StateEncryption.Type)
	if err != nil {
		return false, err
	}
	for _, e := range ev {
		if e.Type == event.StateEncryption.Type && len(e.Content) > 2 { // {}: redacted or cleared
			return true, nil
		}
	}
	return false, nil
}

// rtcMemberType is MatrixRTC's per-device membership state type
// (callengine/rtc.TypeMember); residents need power to send it.
const rtcMemberType = "org.matrix.msc3401.call.member"

// AllowCallMembership makes sure members of room (default power 0) may
// send MatrixRTC membership state, so residents can join its call. Rooms
// made by older firmware lack it; the intercom created them and has the
// power to change it. It reports whether it changed anything.
func (s *Session) AllowCallMembership(ctx context.Context, room callengine.RoomID) (bool, error) {
	c, err := s.client()
	if err != nil {
		return false, err
	}
	var pl map[string]json.RawMessage
	if _, err := s.roomState(ctx, c, id.RoomID(room), event.StatePowerLevels, &pl); err != nil {
		return false, fmt.Errorf("read power levels of %s: %w", room, err)
	}
	if pl == nil {
		pl = map[string]json.RawMessage{}
	}
	events := map[string]json.RawMessage{}
	if raw, ok := pl["events"]; ok {
		_ = json.Unmarshal(raw, &events) // a broken map is replaced below
	}
	if lvl, ok := events[rtcMemberType]; ok && string(lvl) == "0" {
		return false, nil
	}
	events[rtcMemberType] = json.RawMessage("0")
	b, err := json.Marshal(events)
	if err != nil {
		return false, err
	}
	pl["events"] = b
	// Every other key is written back as read: users, defaults, ...
	if err := s.putState(ctx, c, id.RoomID(room), event.StatePowerLevels, pl); err != nil {
		return false, fmt.Errorf("allow call membership in %s: %w", room, err)
	}
	return true, nil
}
