package matrix

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/doorbell/intercom/callengine"
	"github.com/doorbell/intercom/internal/runloop"
)

// EnsureDirectRooms returns one direct room per resident, making one where
// needed. For each resident it takes the first usable room of
//  1. the room in the store,
//  2. the resident's rooms in the intercom's m.direct account data,
//  3. a new private room (is_direct, resident invited), which is then
//     added to m.direct and the store.
//
// A room is usable when the intercom is joined, the resident is joined or
// invited, and nobody else is a member: a classic 1:1 call rings every
// other member of the room (shared/matrix-voip.md §1.5). New rooms are
// encrypted when encryption is on (create); existing rooms stay as they
// are, encrypted or not.
//
// It is idempotent: a second call with the same state creates nothing.
func (s *Session) EnsureDirectRooms(ctx context.Context) (map[callengine.UserID]callengine.RoomID, error) {
	c, err := s.client()
	if err != nil {
		return nil, err
	}
	var joined *mautrix.RespJoinedRooms
	err = s.do(ctx, "joined_rooms", loopPolicy, func(ctx context.Context) (err error) {
		joined, err = c.JoinedRooms(ctx)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("list joined rooms: %w", err)
	}
	d := &directRooms{s: s, c: c, joined: joined.JoinedRooms}
	residents := s.Residents()
	out := make(map[callengine.UserID]callengine.RoomID, len(residents))
	for _, r := range residents {
		room, err := d.ensure(ctx, id.UserID(r))
		if err != nil {
			return nil, fmt.Errorf("direct room for %s: %w", r, err)
		}
		out[r] = callengine.RoomID(room)
	}
	return out, nil
}

// directRooms carries the state of one EnsureDirectRooms call.
type directRooms struct {
	s      *Session
	c      *mautrix.Client
	joined []id.RoomID
	direct map[string]json.RawMessage // m.direct, loaded on first need
}

func (d *directRooms) ensure(ctx context.Context, resident id.UserID) (id.RoomID, error) {
	stored, ok, err := d.s.store.DirectRoom(string(resident))
	if err != nil {
		return "", fmt.Errorf("read stored direct room: %w", err)
	}
	if ok && stored != "" {
		usable, err := d.usable(ctx, id.RoomID(stored), resident)
		if err != nil {
			return "", err
		}
		if usable {
			return id.RoomID(stored), nil
		}
		d.s.log.Info("stored direct room no longer usable", "room_id", stored, "user_id", resident)
	}

	if d.direct == nil {
		if d.direct, err = d.loadDirect(ctx); err != nil {
			return "", err
		}
	}
	candidates := directEntry(d.direct, resident)
	// Newest last: clients append to m.direct.
	for _, room := range slices.Backward(candidates) {
		if room == id.RoomID(stored) {
			continue
		}
		usable, err := d.usable(ctx, room, resident)
		if err != nil {
			return "", err
		}
		if usable {
			d.s.log.Info("reusing direct room from m.direct", "room_id", room, "user_id", resident)
			return room, d.save(resident, room)
		}
	}

	room, err := d.create(ctx, resident)
	if err != nil {
		return "", err
	}
	if err := d.recordDirect(ctx, resident, room); err != nil {
		return "", err
	}
	return room, d.save(resident, room)
}

func (d *directRooms) save(resident id.UserID, room id.RoomID) error {
	if err := d.s.store.SaveDirectRoom(string(resident), string(room)); err != nil {
		return fmt.Errorf("save direct room: %w", err)
	}
	return nil
}

// usable reports whether the intercom is joined to room, resident is
// joined or invited, and no third user is joined or invited.
func (d *directRooms) usable(ctx context.Context, room id.RoomID, resident id.UserID) (bool, error) {
	if !slices.Contains(d.joined, room) {
		return false, nil
	}
	var resp struct {
		Chunk []struct {
			StateKey *string `json:"state_key"`
			Content  struct {
				Membership string `json:"membership"`
			} `json:"content"`
		} `json:"chunk"`
	}
	url := d.c.BuildClientURL("v3", "rooms", room, "members")
	err := d.s.do(ctx, "members", loopPolicy, func(ctx context.Context) error {
		_, err := d.c.MakeRequest(ctx, http.MethodGet, url, nil, &resp)
		return err
	})
	if err != nil {
		return false, fmt.Errorf("list members of %s: %w", room, err)
	}
	residentIn := false
	for _, m := range resp.Chunk {
		if m.StateKey == nil {
			continue
		}
		if m.Content.Membership != string(event.MembershipJoin) && m.Content.Membership != string(event.MembershipInvite) {
			continue
		}
		switch id.UserID(*m.StateKey) {
		case resident:
			residentIn = true
		case d.c.UserID:
		default:
			return false, nil
		}
	}
	return residentIn, nil
}

// loadDirect reads the intercom's m.direct account data; absent is empty.
func (d *directRooms) loadDirect(ctx context.Context) (map[string]json.RawMessage, error) {
	direct := map[string]json.RawMessage{}
	err := d.s.do(ctx, "get m.direct", loopPolicy, func(ctx context.Context) error {
		clear(direct)
		return d.c.GetAccountData(ctx, event.AccountDataDirectChats.Type, &direct)
	})
	if errors.Is(err, mautrix.MNotFound) {
		return map[string]json.RawMessage{}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read m.direct: %w", err)
	}
	if direct == nil { // the account data was JSON null
		direct = map[string]json.RawMessage{}
	}
	return direct, nil
}

// directEntry returns the rooms listed for user in m.direct, ignoring an
// entry of the wrong shape.
func directEntry(direct map[string]json.RawMessage, user id.UserID) []id.RoomID {
	var rooms []id.RoomID
	if raw, ok := direct[string(user)]; ok {
		_ = json.Unmarshal(raw, &rooms)
	}
	return rooms
}

// recordDirect adds room to user's entry of m.direct. It reads m.direct
// again just before writing and changes only that one entry, so entries
// written by other clients survive.
func (d *directRooms) recordDirect(ctx context.Context, user id.UserID, room id.RoomID) error {
	direct, err := d.loadDirect(ctx)
	if err != nil {
		return err
	}
	rooms := directEntry(direct, user)
	if !slices.Contains(rooms, room) {
		rooms = append(rooms, room)
	}
	entry, err := json.Marshal(rooms)
	if err != nil {
		return fmt.Errorf("encode m.direct entry: %w", err)
	}
	direct[string(user)] = entry
	err = d.s.do(ctx, "put m.direct", loopPolicy, func(ctx context.Context) error {
		return d.c.SetAccountData(ctx, event.AccountDataDirectChats.Type, direct)
	})
	if err != nil {
		return fmt.Errorf("write m.direct: %w", err)
	}
	d.direct = direct
	return nil
}

// create makes a private direct room with resident invited.
//
// With encryption on, the room is what Element makes for a DM: preset
// trusted_private_chat (both ends at power level 100) and encrypted from
// its first event. Without it, preset private_chat: the resident gets the
// default power level, so a client cannot switch on encryption (state
// default 50) in a room the intercom could not decrypt.
func (d *directRooms) create(ctx context.Context, resident id.UserID) (id.RoomID, error) {
	req := &mautrix.ReqCreateRoom{
		Preset:   "private_chat",
		IsDirect: true,
		Invite:   []id.UserID{resident},
		Name:     d.s.opts.DeviceName,
		// Residents may join the room's MatrixRTC call (Element X,
		// Element Call): members send their call.member state at power
		// level 0, as Element's own call rooms allow.
		PowerLevelOverride: &event.PowerLevelsEventContent{Events: map[string]int{rtcMemberType: 0}},
	}
	if d.s.opts.Encryption != nil {
		req.Preset = "trusted_private_chat"
		req.InitialState = encryptionState()
	}
	// Only 429 is retried: after a 5xx or a lost response the room may
	// exist already, and a second one would be left behind.
	p := retryPolicy{attempts: createRoomAttempts, backoff: loopPolicy.backoff}
	var resp *mautrix.RespCreateRoom
	err := d.s.do(ctx, "createRoom", p, func(ctx context.Context) error {
		var err error
		resp, err = d.c.CreateRoom(ctx, req)
		if err != nil {
			if statusCode(err) != http.StatusTooManyRequests {
				return runloop.Permanent(err)
			}
		}
		return err
	})
	if err != nil {
		return "", fmt.Errorf("create room: %w", err)
	}
	if resp == nil || resp.RoomID == "" {
		return "", errors.New("create room: response without room_id")
	}
	d.joined = append(d.joined, resp.RoomID)
	d.s.log.Info("created direct room", "room_id", resp.RoomID, "user_id", resident)
	return resp.RoomID, nil
}

// encryptionState is the initial state that makes a new room encrypted
// (Matrix spec, "m.room.encryption"), with Megolm and the spec's default
// rotation (a week or 100 messages).
func encryptionState() []*event.Event {
	return []*event.Event{{
		Type:     event.StateEncryption,
		StateKey: new(string),
		Content:  event.Content{Parsed: &event.EncryptionEventContent{Algorithm: id.AlgorithmMegolmV1}},
	}}
}
