package matrixtest

import (
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"time"
)

// The model: tokens, filters, account data, aliases and rooms' state.

// AddToken makes token valid for the account's device deviceID.
func (s *Server) AddToken(token, deviceID string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.tokens[token] = [2]string{s.UserID, deviceID}
	s.changedLocked(false)
}

// RevokeTokens makes every access token invalid (M_UNKNOWN_TOKEN).
func (s *Server) RevokeTokens() {
	s.mu.Lock()
	defer s.mu.Unlock()
	clear(s.tokens)
	s.changedLocked(true)
}

// SetFilter stores a filter under id, as if the client had made it.
func (s *Server) SetFilter(id, body string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.filters[id] = body
	s.changedLocked(false)
}

// SetTURN sets the answer of voip/turnServer (JSON bytes or a value to
// marshal); by default it is {} (no TURN server).
func (s *Server) SetTURN(resp any) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.turn = string(JSON(resp))
	s.changedLocked(false)
}

// SetAccountData sets the account's account data of eventType.
func (s *Server) SetAccountData(eventType string, content any) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.account[eventType] = string(JSON(content))
	s.changedLocked(false)
}

// AccountData returns the account data of eventType as stored (the
// client's bytes).
func (s *Server) AccountData(eventType string) (json.RawMessage, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	d, ok := s.account[eventType]
	return json.RawMessage(d), ok
}

// SetAlias points alias at room.
func (s *Server) SetAlias(alias, room string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.aliases[alias] = room
	s.changedLocked(false)
}

// Alias returns the room alias points at.
func (s *Server) Alias(alias string) (string, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	r, ok := s.aliases[alias]
	return r, ok
}

// SetMembership sets user's membership ("join", "invite", "leave") of
// room in the model, as user's own event; nothing is delivered.
func (s *Server) SetMembership(room, user, membership string) {
	s.SetState(State(room, user, "m.room.member", user, map[string]string{"membership": membership}))
}

// SetState sets a state event in the model; nothing is delivered.
func (s *Server) SetState(e Event) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.setStateLocked(e)
	s.changedLocked(false)
}

func (s *Server) setStateLocked(e Event) Event {
	if e.StateKey == nil {
		panic("matrixtest: state event without a state key")
	}
	e = s.completeLocked(e)
	r := s.rooms[e.Room]
	if r == nil {
		r = &room{state: map[[2]string]Event{}}
		s.rooms[e.Room] = r
	}
	r.state[[2]string{e.Type, *e.StateKey}] = e
	return e
}

// completeLocked gives e an event ID and a timestamp when it lacks them.
func (s *Server) completeLocked(e Event) Event {
	if e.ID == "" {
		s.seq++
		e.ID = fmt.Sprintf("$e%d", s.seq)
	}
	if e.Timestamp.IsZero() {
		e.Timestamp = time.Now()
	}
	if e.Content == nil {
		e.Content = json.RawMessage(`{}`)
	}
	return e
}

// StateOf returns the content of room's state event (eventType,
// stateKey) in the model.
func (s *Server) StateOf(room, eventType, stateKey string) (json.RawMessage, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if r := s.rooms[room]; r != nil {
		if e, ok := r.state[[2]string{eventType, stateKey}]; ok {
			return e.Content, true
		}
	}
	return nil, false
}

// Membership returns user's membership of room in the model; "" none.
func (s *Server) Membership(room, user string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.membershipLocked(room, user)
}

func (s *Server) membershipLocked(room, user string) string {
	r := s.rooms[room]
	if r == nil {
		return ""
	}
	var c struct {
		Membership string `json:"membership"`
	}
	_ = json.Unmarshal(r.state[[2]string{"m.room.member", user}].Content, &c)
	return c.Membership
}

// JoinedRooms returns the rooms the account is joined to, sorted.
func (s *Server) JoinedRooms() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.joinedLocked()
}

func (s *Server) joinedLocked() []string {
	out := []string{}
	for _, id := range slices.Sorted(maps.Keys(s.rooms)) {
		if s.membershipLocked(id, s.UserID) == "join" {
			out = append(out, id)
		}
	}
	return out
}

// clientEvent is e in client format.
func clientEvent(e Event) json.RawMessage {
	raw, _ := json.Marshal(struct {
		ID       string          `json:"event_id"`
		Room     string          `json:"room_id"`
		Type     string          `json:"type"`
		Sender   string          `json:"sender"`
		StateKey *string         `json:"state_key,omitempty"`
		Content  json.RawMessage `json:"content"`
		TS       int64           `json:"origin_server_ts"`
		Unsigned struct {
			Age int64 `json:"age"`
		} `json:"unsigned"`
	}{ID: e.ID, Room: e.Room, Type: e.Type, Sender: e.Sender, StateKey: e.StateKey, Content: e.Content, TS: e.Timestamp.UnixMilli()})
	return raw
}
