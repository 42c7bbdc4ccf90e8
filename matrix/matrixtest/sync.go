package matrixtest

import (
	"cmp"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Deliver adds events to their rooms' timelines in the next /sync (a
// state event among them also changes the model). Deliver before the
// client's first sync and the client takes them for backlog.
func (s *Server) Deliver(evs ...Event) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, e := range evs {
		if e.StateKey != nil {
			e = s.setStateLocked(e)
		} else {
			e = s.completeLocked(e)
		}
		if s.pending.timeline == nil {
			s.pending.timeline = map[string][]Event{}
		}
		s.pending.timeline[e.Room] = append(s.pending.timeline[e.Room], e)
	}
	s.changedLocked(true)
}

// DeliverState sets state events in the model and delivers them in their
// rooms' state sections of the next /sync.
func (s *Server) DeliverState(evs ...Event) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, e := range evs {
		e = s.setStateLocked(e)
		if s.pending.state == nil {
			s.pending.state = map[string][]Event{}
		}
		s.pending.state[e.Room] = append(s.pending.state[e.Room], e)
	}
	s.changedLocked(true)
}

// DeliverToDevice delivers a to-device event from sender in the next
// /sync.
func (s *Server) DeliverToDevice(sender, eventType string, content any) {
	raw, _ := json.Marshal(map[string]any{"sender": sender, "type": eventType, "content": JSON(content)})
	s.mu.Lock()
	defer s.mu.Unlock()
	s.pending.toDevice = append(s.pending.toDevice, raw)
	s.changedLocked(true)
}

// Invite has inviter invite the account to room: its membership becomes
// "invite" and the next /sync carries the invite.
func (s *Server) Invite(room, inviter string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	e := s.setStateLocked(State(room, inviter, "m.room.member", s.UserID, map[string]string{"membership": "invite"}))
	if s.pending.invite == nil {
		s.pending.invite = map[string][]json.RawMessage{}
	}
	s.pending.invite[room] = append(s.pending.invite[room], clientEvent(e))
	s.changedLocked(true)
}

// Leave drops the account from room (kicked, or an invite withdrawn);
// the next /sync says so.
func (s *Server) Leave(room string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.setStateLocked(State(room, s.UserID, "m.room.member", s.UserID, map[string]string{"membership": "leave"}))
	s.pending.leave = append(s.pending.leave, room)
	s.changedLocked(true)
}

// SyncIdle is signalled (buffer of one) whenever a long-polling /sync
// (timeout above 0) finds nothing scripted and nothing to deliver, and
// waits: the client has had everything so far.
func (s *Server) SyncIdle() <-chan struct{} { return s.syncIdle }

// sync answers an authenticated /sync that nothing scripted answers: what
// was delivered since, else an empty answer after waiting up to IdlePoll
// for news. s.mu is held.
func (s *Server) sync(w http.ResponseWriter, r *http.Request) {
	since := r.URL.Query().Get("since")
	// The client's timeout (none: 0, Matrix spec, GET /sync) caps the
	// wait, so the first sync of a client answers at once.
	wait := s.idlePoll
	if ms, err := strconv.ParseInt(r.URL.Query().Get("timeout"), 10, 64); err != nil || ms <= 0 {
		wait = 0
	} else {
		wait = min(wait, time.Duration(ms)*time.Millisecond)
	}
	if s.pending.empty() && wait > 0 {
		select {
		case s.syncIdle <- struct{}{}:
		default:
		}
		news := s.news
		s.mu.Unlock()
		t := time.NewTimer(wait)
		select {
		case <-r.Context().Done():
		case <-news:
		case <-t.C:
		}
		t.Stop()
		s.mu.Lock()
		if len(s.syncs) > 0 {
			// Scripted while waiting: answer empty now, the script next.
			write(w, OK(fmt.Sprintf(`{"next_batch":%q}`, cmp.Or(since, "s0"))))
			return
		}
		if _, authed := s.tokens[strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")]; !authed {
			write(w, Error(http.StatusUnauthorized, "M_UNKNOWN_TOKEN"))
			return
		}
	}
	if s.pending.empty() {
		write(w, OK(fmt.Sprintf(`{"next_batch":%q}`, cmp.Or(since, "s0"))))
		return
	}
	b := s.pending
	s.pending = batch{}
	s.batches++
	type events struct {
		Events []json.RawMessage `json:"events"`
	}
	type joined struct {
		State    *events `json:"state,omitempty"`
		Timeline *events `json:"timeline,omitempty"`
	}
	resp := struct {
		NextBatch string `json:"next_batch"`
		Rooms     struct {
			Join   map[string]*joined                   `json:"join,omitempty"`
			Invite map[string]map[string]events         `json:"invite,omitempty"`
			Leave  map[string]map[string]map[string]any `json:"leave,omitempty"`
		} `json:"rooms"`
		ToDevice *events `json:"to_device,omitempty"`
	}{NextBatch: fmt.Sprintf("b%d", s.batches)}
	join := func(room string) *joined {
		if resp.Rooms.Join == nil {
			resp.Rooms.Join = map[string]*joined{}
		}
		if resp.Rooms.Join[room] == nil {
			resp.Rooms.Join[room] = &joined{}
		}
		return resp.Rooms.Join[room]
	}
	for room, evs := range b.state {
		j := join(room)
		j.State = &events{}
		for _, e := range evs {
			j.State.Events = append(j.State.Events, clientEvent(e))
		}
	}
	for room, evs := range b.timeline {
		j := join(room)
		j.Timeline = &events{}
		for _, e := range evs {
			j.Timeline.Events = append(j.Timeline.Events, clientEvent(e))
		}
	}
	for room, evs := range b.invite {
		if resp.Rooms.Invite == nil {
			resp.Rooms.Invite = map[string]map[string]events{}
		}
		resp.Rooms.Invite[room] = map[string]events{"invite_state": {Events: evs}}
	}
	for _, room := range b.leave {
		if resp.Rooms.Leave == nil {
			resp.Rooms.Leave = map[string]map[string]map[string]any{}
		}
		resp.Rooms.Leave[room] = map[string]map[string]any{"timeline": {"events": []any{}}}
	}
	if len(b.toDevice) > 0 {
		resp.ToDevice = &events{Events: b.toDevice}
	}
	write(w, okJSON(resp))
}
