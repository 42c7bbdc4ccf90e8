package matrix

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/doorbell/intercom/callengine"
	"github.com/doorbell/intercom/internal/runloop"
)

// Group-call membership event types household devices must be allowed to
// send (famedly's SDK and Element Call; matrix-voip.md §4.2, §4.4).
var householdMemberTypes = []string{"com.famedly.call.member", "org.matrix.msc3401.call.member"}

// HouseholdRoom says what EnsureHouseholdRoom found and did.
type HouseholdRoom struct {
	Room    callengine.RoomID
	Created bool
	Invited []callengine.UserID
}

// EnsureHouseholdRoom makes the household room exist and the intercom a
// member, and invites every resident who is neither joined nor invited.
// roomOrAlias is a room ID (joined, never created) or an alias on the
// intercom's own homeserver; an alias that does not resolve becomes a new
// private room with that alias, named name, in which members may send
// group-call memberships (power level 0, as Element does for its calls).
// A second call changes nothing.
func (s *Session) EnsureHouseholdRoom(ctx context.Context, roomOrAlias, name string) (HouseholdRoom, error) {
	var out HouseholdRoom
	c, err := s.client()
	if err != nil {
		return out, err
	}
	if strings.HasPrefix(roomOrAlias, "#") {
		var resp *mautrix.RespAliasResolve
		err := s.do(ctx, "resolve household alias", loopPolicy, func(ctx context.Context) error {
			var err error
			resp, err = c.ResolveAlias(ctx, id.RoomAlias(roomOrAlias))
			if errors.Is(err, mautrix.MNotFound) {
				return runloop.Permanent(err)
			}
			return err
		})
		switch {
		case err == nil:
		case errors.Is(err, mautrix.MNotFound):
			room, err := s.createHousehold(ctx, c, roomOrAlias, name)
			if err != nil {
				return out, err
			}
			out.Room, out.Created, out.Invited = room, true, s.Residents()
			return out, nil
		default:
			return out, fmt.Errorf("resolve %s: %w", roomOrAlias, err)
		}
		roomOrAlias = string(resp.RoomID)
	}
	room, err := s.JoinHouseholdRoom(ctx, roomOrAlias)
	if err != nil {
		return out, err
	}
	out.Room = room
	members, err := c.Members(ctx, id.RoomID(room))
	if err != nil {
		return out, fmt.Errorf("household room members: %w", err)
	}
	in := map[id.UserID]bool{}
	for _, ev := range members.Chunk {
		if ev.StateKey == nil {
			continue
		}
		m, ok := ev.Content.Parsed.(*event.MemberEventContent)
		if !ok {
			if err := ev.Content.ParseRaw(ev.Type); err != nil {
				continue
			}
			m, ok = ev.Content.Parsed.(*event.MemberEventContent)
		}
		if ok && (m.Membership == event.MembershipJoin || m.Membership == event.MembershipInvite) {
			in[id.UserID(*ev.StateKey)] = true
		}
	}
	for _, r := range s.Residents() {
		if in[id.UserID(r)] {
			continue
		}
		err := s.do(ctx, "invite to household room", loopPolicy, func(ctx context.Context) error {
			_, err := c.InviteUser(ctx, id.RoomID(room), &mautrix.ReqInviteUser{UserID: id.UserID(r)})
			return err
		})
		if err != nil {
			return out, fmt.Errorf("invite %s to the household room: %w", r, err)
		}
		out.Invited = append(out.Invited, r)
	}
	return out, nil
}

func (s *Session) createHousehold(ctx context.Context, c *mautrix.Client, alias, name string) (callengine.RoomID, error) {
	local, server, ok := strings.Cut(strings.TrimPrefix(alias, "#"), ":")
	if !ok || local == "" {
		return "", fmt.Errorf("household room alias %q is not #name:server", alias)
	}
	if _, own, _ := id.UserID(s.UserID()).Parse(); server != own {
		return "", fmt.Errorf("household room %s does not exist and is on %s, not the intercom's homeserver %s: create it there", alias, server, own)
	}
	events := map[string]int{}
	for _, t := range householdMemberTypes {
		events[t] = 0
	}
	invite := make([]id.UserID, 0, len(s.Residents()))
	for _, r := range s.Residents() {
		invite = append(invite, id.UserID(r))
	}
	req := &mautrix.ReqCreateRoom{
		Preset:             "private_chat",
		RoomAliasName:      local,
		Name:               name,
		Invite:             invite,
		PowerLevelOverride: &event.PowerLevelsEventContent{Events: events},
	}
	if s.opts.Encryption != nil {
		req.InitialState = encryptionState()
	}
	p := retryPolicy{attempts: createRoomAttempts, backoff: loopPolicy.backoff}
	var resp *mautrix.RespCreateRoom
	err := s.do(ctx, "create household room", p, func(ctx context.Context) error {
		var err error
		resp, err = c.CreateRoom(ctx, req)
		if err != nil && statusCode(err) != http.StatusTooManyRequests {
			return runloop.Permanent(err)
		}
		return err
	})
	if err != nil {
		return "", fmt.Errorf("create household room %s: %w", alias, err)
	}
	s.log.Info("created household room", "room_id", resp.RoomID, "alias", alias)
	return callengine.RoomID(resp.RoomID), nil
}
