package matrix

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"slices"
	"strings"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/doorbell/intercom/callengine"
)

// StateEvent is a state event of a watched room as sync delivered it:
// content raw and untrusted. It is callengine's, so that the call runners
// take it without importing this adapter.
type StateEvent = callengine.StateEvent

// ToDeviceEvent is a to-device event as sync delivered it (Matrix spec,
// "Send-to-Device messaging"): content raw and untrusted.
type ToDeviceEvent struct {
	Sender  callengine.UserID
	Type    string
	Content json.RawMessage
	// Encrypted: the event arrived Olm-encrypted (m.room.encrypted) and
	// decrypted; Device is then the sender's device that sent it.
	Encrypted bool
	Device    string
}

// HouseholdHooks receive what the group call needs from the sync loop.
// Both run on the sync goroutine and must not block.
type HouseholdHooks struct {
	// Room is the watched room; StateTypes the state event types wanted
	// from it (m.room.member is always delivered).
	Room       callengine.RoomID
	StateTypes []string
	// State gets the room's state events: those of the state section of
	// each sync (including the first, which is current state, not
	// backlog) and the state events of the timeline.
	State func(StateEvent)
	// ToDevice gets every to-device event, except in the first sync
	// without a stored token (backlog, like call events).
	ToDevice func(ToDeviceEvent)
}

// SetHouseholdHooks registers a copy of h; a nil h removes them. It may
// be called while Run is running (the daemon sets the room once an alias
// is resolved): the next sync response goes to the new hooks. The sync
// filter is built when Run starts, though, so StateTypes it did not have
// then are asked for from the next Run only.
func (s *Session) SetHouseholdHooks(h *HouseholdHooks) {
	if h != nil {
		c := *h
		c.StateTypes = slices.Clone(h.StateTypes)
		h = &c
	}
	s.household.Store(h)
}

// householdFilter adds the watched state types to the state and timeline
// parts of f, and m.room.member to the timeline so that a member leaving
// is seen (Dendrite on SQLite matches types exactly, so they are listed by
// name).
func (s *Session) householdFilter(f *mautrix.Filter) *mautrix.Filter {
	h := s.household.Load()
	if h == nil || f.Room == nil {
		return f
	}
	addTypes(f.Room.State, h.StateTypes...)
	addTypes(f.Room.Timeline, append([]string{event.StateMember.Type}, h.StateTypes...)...)
	return f
}

// householdSync is the part of a /sync response the hooks read.
type householdSync struct {
	ToDevice struct {
		Events []json.RawMessage `json:"events"`
	} `json:"to_device"`
	Rooms struct {
		Join map[id.RoomID]struct {
			State struct {
				Events []json.RawMessage `json:"events"`
			} `json:"state"`
			Timeline struct {
				Events []json.RawMessage `json:"events"`
			} `json:"timeline"`
		} `json:"join"`
	} `json:"rooms"`
}

// handleStateHooks hands one sync response's parts (decoded once by the
// sync loop for the crypto and these hooks) to the household and
// MatrixRTC hooks, when any is set. Both are loaded once, so a whole
// response goes to the same hooks even if they are replaced meanwhile.
//
// decrypted are the to-device events that arrived Olm-encrypted, already
// decrypted (e2ee.go); their encrypted form in resp is skipped.
func (s *Session) handleStateHooks(resp *householdSync, decrypted []ToDeviceEvent, initial bool) {
	hh, rh := s.household.Load(), s.rtc.Load()
	if resp == nil || (hh == nil && rh == nil) {
		return
	}
	s.handleHousehold(hh, resp, decrypted, initial)
	s.handleRTC(rh, resp, decrypted, initial)
}

// handleHousehold hands one sync response's state and to-device events to
// h (nil: none).
func (s *Session) handleHousehold(h *HouseholdHooks, resp *householdSync, decrypted []ToDeviceEvent, initial bool) {
	if h == nil {
		return
	}
	if j, ok := resp.Rooms.Join[id.RoomID(h.Room)]; ok && h.State != nil {
		for _, list := range [][]json.RawMessage{j.State.Events, j.Timeline.Events} {
			for _, r := range list {
				var e syncEvent
				if json.Unmarshal(r, &e) != nil || e.StateKey == nil {
					continue
				}
				if e.Type != event.StateMember.Type && !slices.Contains(h.StateTypes, e.Type) {
					continue
				}
				ev := StateEvent{Room: h.Room, ID: e.ID, Type: e.Type, StateKey: *e.StateKey,
					Sender: callengine.UserID(e.Sender), Content: e.Content}
				if ms := jsonMillis(e.OriginServerTS); ms > 0 {
					ev.Timestamp = time.UnixMilli(ms)
				}
				h.State(ev)
			}
		}
	}
	if initial || h.ToDevice == nil {
		return
	}
	// In an encrypted household room call signalling must arrive
	// Olm-encrypted from the device it names (famedly's SDK and js-sdk
	// encrypt it there): a homeserver can deliver any plaintext to-device
	// event in a member's name, and an invite it forged would get the
	// camera's picture.
	sealed := false
	if e := s.crypt.Load(); e != nil {
		sealed = e.roomEncrypted(context.Background(), id.RoomID(h.Room))
	}
	for _, r := range resp.ToDevice.Events {
		var e struct {
			Sender  string          `json:"sender"`
			Type    string          `json:"type"`
			Content json.RawMessage `json:"content"`
		}
		if json.Unmarshal(r, &e) != nil || e.Type == "" || e.Type == event.ToDeviceEncrypted.Type {
			continue
		}
		if sealed {
			s.log.Warn("plaintext to-device event ignored: the household room is encrypted", "sender", e.Sender, "type", e.Type)
			continue
		}
		h.ToDevice(ToDeviceEvent{Sender: callengine.UserID(e.Sender), Type: e.Type, Content: e.Content})
	}
	for _, e := range decrypted {
		if why := deviceMismatch(e); why != "" {
			s.log.Warn("encrypted to-device event ignored", "sender", e.Sender, "type", e.Type, "reason", why)
			continue
		}
		h.ToDevice(e)
	}
}

// deviceMismatch says why a decrypted to-device event is not what its
// sender's device said: the crypto could not name the device, or the
// event claims another one (its device_id or party_id, which the group
// call takes as the sender's device); "" if it is.
func deviceMismatch(e ToDeviceEvent) string {
	if e.Device == "" {
		return "the sending device is unknown"
	}
	var c struct {
		DeviceID *string `json:"device_id"`
		PartyID  *string `json:"party_id"`
	}
	if json.Unmarshal(e.Content, &c) != nil {
		return "undecodable content"
	}
	for _, claimed := range []*string{c.DeviceID, c.PartyID} {
		if claimed != nil && *claimed != e.Device {
			return fmt.Sprintf("claims device %q, encrypted by %q", *claimed, e.Device)
		}
	}
	return ""
}

// SendToDevice sends content as a to-device event of eventType to one
// device (PUT /sendToDevice/{eventType}/{txnId}, Matrix spec
// "Send-to-Device messaging"). Retries reuse the transaction ID, so a
// retry after a lost response cannot deliver twice.
//
// With encryption on and the household room encrypted, the event goes
// Olm-encrypted to that device (as m.room.encrypted), as famedly's SDK
// sends group call signalling in encrypted rooms. It is encrypted once:
// a retry sends the same ciphertext under the same transaction ID, where
// a new encryption would be a new message the homeserver delivers again.
func (s *Session) SendToDevice(ctx context.Context, eventType string, user callengine.UserID, device string, content any) error {
	e, h := s.crypt.Load(), s.household.Load()
	to := map[id.UserID][]id.DeviceID{id.UserID(user): {id.DeviceID(device)}}
	return s.sendToDevices(ctx, eventType, to, content, e != nil && h != nil && e.roomEncrypted(ctx, id.RoomID(h.Room)))
}

// SendEncryptedToDevices sends content Olm-encrypted to every device in
// to (user → device IDs), whatever the room: MatrixRTC media keys
// (io.element.call.encryption_keys) are never sent in the clear. All go
// in one request, as matrix-js-sdk sends a key to a call's members: a
// resident with four devices gets the key after one round trip, not four.
// It fails with ErrCryptoOff when encryption is off. A device that
// matrix.share_keys refuses, or that has no Olm session to be had, is
// left out and named in the error; the others still get the event.
// Retries are as SendToDevice's.
func (s *Session) SendEncryptedToDevices(ctx context.Context, eventType string, to map[callengine.UserID][]string, content any) error {
	e := s.crypt.Load()
	if e == nil {
		return fmt.Errorf("send %s: %w", eventType, ErrCryptoOff)
	}
	var problems []error
	trusted := map[id.UserID][]id.DeviceID{}
	for _, user := range slices.Sorted(maps.Keys(to)) {
		for _, device := range to[user] {
			if err := e.trustedEnough(ctx, id.UserID(user), id.DeviceID(device)); err != nil {
				problems = append(problems, fmt.Errorf("send %s: %w", eventType, err))
				continue
			}
			trusted[id.UserID(user)] = append(trusted[id.UserID(user)], id.DeviceID(device))
		}
	}
	if len(trusted) > 0 {
		problems = append(problems, s.sendToDevices(ctx, eventType, trusted, content, true))
	}
	return errors.Join(problems...)
}

// sendToDevices sends content to the devices in to in one request, sealed
// with Olm when encrypt is set. Devices the sealing could not reach are
// named in the error; the request still goes to the others.
func (s *Session) sendToDevices(ctx context.Context, eventType string, to map[id.UserID][]id.DeviceID, content any, encrypt bool) error {
	body, err := json.Marshal(content)
	if err != nil {
		return fmt.Errorf("marshal %s content: %w", eventType, err)
	}
	what, sendType := "send to-device "+eventType, eventType
	var req any
	if encrypt {
		what, sendType = "send encrypted to-device "+eventType, event.ToDeviceEncrypted.Type
	} else {
		messages := map[string]map[string]json.RawMessage{}
		for user, devices := range to {
			messages[string(user)] = map[string]json.RawMessage{}
			for _, d := range devices {
				messages[string(user)][string(d)] = body
			}
		}
		req = map[string]any{"messages": messages}
	}
	var unsealed error
	txn := fmt.Sprintf("%s.%d", s.txnPrefix, s.txnSeq.Add(1))
	err = s.do(ctx, what, sendPolicy, func(ctx context.Context) error {
		if req == nil {
			sealed, missing, err := s.crypt.Load().sealToDevices(ctx, eventType, to, body)
			if err != nil {
				return err
			}
			req, unsealed = sealed, missing
		}
		c, err := s.client()
		if err != nil {
			return err
		}
		_, err = c.MakeRequest(ctx, http.MethodPut, c.BuildClientURL("v3", "sendToDevice", sendType, txn), req, nil)
		return err
	})
	if err != nil {
		return fmt.Errorf("send %s to %s: %w", eventType, devicesOf(to), err)
	}
	return unsealed
}

// devicesOf names the devices of to for an error, in a stable order.
func devicesOf(to map[id.UserID][]id.DeviceID) string {
	var names []string
	for user, devices := range to {
		for _, d := range devices {
			names = append(names, string(user)+"/"+string(d))
		}
	}
	slices.Sort(names)
	return strings.Join(names, ", ")
}

// PutState sets a state event and returns its event ID.
func (s *Session) PutState(ctx context.Context, room callengine.RoomID, eventType, stateKey string, content any) (string, error) {
	body, err := json.Marshal(content)
	if err != nil {
		return "", fmt.Errorf("marshal %s content: %w", eventType, err)
	}
	var eventID string
	err = s.do(ctx, "put "+eventType, sendPolicy, func(ctx context.Context) error {
		c, err := s.client()
		if err != nil {
			return err
		}
		resp, err := c.SendStateEvent(ctx, id.RoomID(room), event.Type{Type: eventType, Class: event.StateEventType}, stateKey, json.RawMessage(body))
		if err == nil && resp != nil {
			eventID = string(resp.EventID)
		}
		return err
	})
	if err != nil {
		return "", fmt.Errorf("set %s %q of %s: %w", eventType, stateKey, room, err)
	}
	return eventID, nil
}

// RoomStateEvents reads the current state of room, keeping the given
// types and m.room.member (GET /rooms/{roomId}/state).
func (s *Session) RoomStateEvents(ctx context.Context, room callengine.RoomID, types ...string) ([]StateEvent, error) {
	var raw []json.RawMessage
	err := s.do(ctx, "get room state", loopPolicy, func(ctx context.Context) error {
		c, err := s.client()
		if err != nil {
			return err
		}
		_, err = c.MakeRequest(ctx, http.MethodGet, c.BuildClientURL("v3", "rooms", room, "state"), nil, &raw)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("read state of %s: %w", room, err)
	}
	var out []StateEvent
	for _, r := range raw {
		var e syncEvent
		if json.Unmarshal(r, &e) != nil || e.StateKey == nil {
			continue
		}
		if e.Type != event.StateMember.Type && !slices.Contains(types, e.Type) {
			continue
		}
		ev := StateEvent{Room: room, ID: e.ID, Type: e.Type, StateKey: *e.StateKey, Sender: callengine.UserID(e.Sender), Content: e.Content}
		if ms := jsonMillis(e.OriginServerTS); ms > 0 {
			ev.Timestamp = time.UnixMilli(ms)
		}
		out = append(out, ev)
	}
	return out, nil
}

// JoinHouseholdRoom resolves a room ID or alias and joins it (a no-op
// when already joined); it returns the room ID.
func (s *Session) JoinHouseholdRoom(ctx context.Context, roomOrAlias string) (callengine.RoomID, error) {
	var room id.RoomID
	err := s.do(ctx, "join household room", loopPolicy, func(ctx context.Context) error {
		c, err := s.client()
		if err != nil {
			return err
		}
		resp, err := c.JoinRoom(ctx, roomOrAlias, nil)
		if err == nil {
			room = resp.RoomID
		}
		return err
	})
	if err != nil {
		return "", fmt.Errorf("join %s: %w", roomOrAlias, err)
	}
	if !strings.HasPrefix(string(room), "!") {
		return "", fmt.Errorf("join %s: no room ID in the answer", roomOrAlias)
	}
	return callengine.RoomID(room), nil
}
