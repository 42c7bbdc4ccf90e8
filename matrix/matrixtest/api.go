package matrixtest

import (
	"encoding/json"
	"fmt"
	"maps"
	"net/http"
	"slices"
	"strings"
)

// answer is the model's answer to an authenticated request; s.mu is held.
func (s *Server) answer(route, path string, r *http.Request, body []byte, who [2]string) Reply {
	p := path
	for _, prefix := range []string{"/_matrix/client/v3/", "/_matrix/client/v1/", "/_matrix/media/v3/"} {
		p = strings.TrimPrefix(p, prefix)
	}
	seg := strings.Split(p, "/")
	last := seg[len(seg)-1]
	s.seq++
	switch route {
	case "GET whoami":
		return okJSON(map[string]string{"user_id": who[0], "device_id": who[1]})
	case "POST logout":
		for tok, w := range s.tokens {
			if w == who {
				delete(s.tokens, tok)
			}
		}
		return OK(`{}`)
	case "POST filter":
		fid := fmt.Sprintf("f%d", s.seq)
		s.filters[fid] = string(body)
		return okJSON(map[string]string{"filter_id": fid})
	case "GET filter":
		if fl, ok := s.filters[last]; ok {
			return OK(fl)
		}
		return Error(http.StatusNotFound, "M_NOT_FOUND")
	case "PUT send":
		// rooms/{room}/send/{type}/{txn}
		if len(seg) < 5 {
			return Error(http.StatusBadRequest, "M_UNRECOGNIZED")
		}
		e := s.completeLocked(Event{Room: seg[1], Type: seg[3], Sender: who[0], Content: body})
		s.sent = append(s.sent, e)
		return okJSON(map[string]string{"event_id": e.ID})
	case "PUT state":
		// rooms/{room}/state/{type}/{key}
		if len(seg) < 4 {
			return Error(http.StatusBadRequest, "M_UNRECOGNIZED")
		}
		key := ""
		if len(seg) > 4 {
			key = strings.Join(seg[4:], "/")
		}
		e := s.setStateLocked(Event{Room: seg[1], Type: seg[3], Sender: who[0], StateKey: &key, Content: body})
		s.sent = append(s.sent, e)
		return okJSON(map[string]string{"event_id": e.ID})
	case "GET state":
		rm := s.rooms[seg[1]]
		if len(seg) < 4 {
			// rooms/{room}/state: every state event.
			list := []json.RawMessage{}
			if rm != nil {
				for _, k := range slices.SortedFunc(maps.Keys(rm.state), func(a, b [2]string) int {
					return strings.Compare(a[0]+"\x00"+a[1], b[0]+"\x00"+b[1])
				}) {
					list = append(list, clientEvent(rm.state[k]))
				}
			}
			return okJSON(list)
		}
		key := ""
		if len(seg) > 4 {
			key = strings.Join(seg[4:], "/")
		}
		if rm != nil {
			if e, ok := rm.state[[2]string{seg[3], key}]; ok {
				return OK(string(e.Content))
			}
		}
		return Error(http.StatusNotFound, "M_NOT_FOUND")
	case "POST join":
		// join/{roomOrAlias} or rooms/{room}/join
		room := seg[1]
		if strings.HasPrefix(room, "#") {
			id, ok := s.aliases[room]
			if !ok {
				return Error(http.StatusNotFound, "M_NOT_FOUND")
			}
			room = id
		}
		s.setStateLocked(State(room, who[0], "m.room.member", who[0], map[string]string{"membership": "join"}))
		return okJSON(map[string]string{"room_id": room})
	case "POST invite":
		var req struct {
			UserID string `json:"user_id"`
		}
		if json.Unmarshal(body, &req) != nil || req.UserID == "" {
			return Error(http.StatusBadRequest, "M_BAD_JSON")
		}
		s.setStateLocked(State(seg[1], who[0], "m.room.member", req.UserID, map[string]string{"membership": "invite"}))
		return OK(`{}`)
	case "GET joined_rooms":
		return okJSON(map[string][]string{"joined_rooms": s.joinedLocked()})
	case "GET members":
		chunk := []json.RawMessage{}
		if rm := s.rooms[seg[1]]; rm != nil {
			for _, k := range slices.SortedFunc(maps.Keys(rm.state), func(a, b [2]string) int { return strings.Compare(a[1], b[1]) }) {
				if k[0] == "m.room.member" {
					chunk = append(chunk, clientEvent(rm.state[k]))
				}
			}
		}
		return okJSON(map[string]any{"chunk": chunk})
	case "GET account_data":
		if d, ok := s.account[last]; ok {
			return OK(d)
		}
		return Error(http.StatusNotFound, "M_NOT_FOUND")
	case "PUT account_data":
		s.account[last] = string(body)
		return OK(`{}`)
	case "POST createRoom":
		return s.createRoom(body, who[0])
	case "GET directory":
		// directory/room/{alias}
		if id, ok := s.aliases[last]; ok {
			return okJSON(map[string]any{"room_id": id, "servers": []string{s.server}})
		}
		return Error(http.StatusNotFound, "M_NOT_FOUND")
	case "PUT sendToDevice":
		// sendToDevice/{type}/{txn}
		var req struct {
			Messages map[string]map[string]json.RawMessage `json:"messages"`
		}
		if len(seg) < 3 || json.Unmarshal(body, &req) != nil {
			return Error(http.StatusBadRequest, "M_BAD_JSON")
		}
		for _, user := range slices.Sorted(maps.Keys(req.Messages)) {
			for _, dev := range slices.Sorted(maps.Keys(req.Messages[user])) {
				s.toDev = append(s.toDev, ToDeviceMessage{Type: seg[1], User: user, Device: dev, Content: req.Messages[user][dev]})
			}
		}
		return OK(`{}`)
	case "POST upload":
		uri := fmt.Sprintf("mxc://%s/m%d", s.server, s.seq)
		s.uploads = append(s.uploads, Upload{ContentType: r.Header.Get("Content-Type"), Name: r.URL.Query().Get("filename"), URI: uri, Data: body})
		return okJSON(map[string]string{"content_uri": uri})
	case "POST keys":
		return s.keys(last, body, who)
	case "GET voip":
		return OK(s.turn)
	case "POST openid":
		return okJSON(map[string]any{"access_token": fmt.Sprintf("oid%d", s.seq), "token_type": "Bearer",
			"matrix_server_name": s.server, "expires_in": 3600})
	}
	return Error(http.StatusNotFound, "M_UNRECOGNIZED")
}

// createRoom makes a room as a homeserver would for the request's preset,
// name, alias, invites, initial state and power level override.
func (s *Server) createRoom(body []byte, creator string) Reply {
	var req struct {
		Name          string                     `json:"name"`
		RoomAliasName string                     `json:"room_alias_name"`
		Invite        []string                   `json:"invite"`
		PowerLevels   map[string]json.RawMessage `json:"power_level_content_override"`
		InitialState  []struct {
			Type     string          `json:"type"`
			StateKey string          `json:"state_key"`
			Content  json.RawMessage `json:"content"`
		} `json:"initial_state"`
	}
	if err := json.Unmarshal(body, &req); err != nil {
		return Error(http.StatusBadRequest, "M_BAD_JSON")
	}
	id := fmt.Sprintf("!r%d:%s", s.seq, s.server)
	alias := ""
	if req.RoomAliasName != "" {
		alias = "#" + req.RoomAliasName + ":" + s.server
		if _, taken := s.aliases[alias]; taken {
			return Error(http.StatusBadRequest, "M_ROOM_IN_USE")
		}
		s.aliases[alias] = id
	}
	set := func(typ, key string, content any) {
		s.setStateLocked(State(id, creator, typ, key, content))
	}
	set("m.room.create", "", map[string]string{"creator": creator, "room_version": "10"})
	set("m.room.member", creator, map[string]string{"membership": "join"})
	pl := map[string]json.RawMessage{
		"users":          JSON(map[string]int{creator: 100}),
		"users_default":  JSON(0),
		"events_default": JSON(0),
		"state_default":  JSON(50),
	}
	maps.Copy(pl, req.PowerLevels)
	set("m.room.power_levels", "", pl)
	if alias != "" {
		set("m.room.canonical_alias", "", map[string]string{"alias": alias})
	}
	for _, st := range req.InitialState {
		set(st.Type, st.StateKey, st.Content)
	}
	if req.Name != "" {
		set("m.room.name", "", map[string]string{"name": req.Name})
	}
	for _, u := range req.Invite {
		s.setStateLocked(State(id, creator, "m.room.member", u, map[string]string{"membership": "invite"}))
	}
	return okJSON(map[string]string{"room_id": id})
}

// login checks a password login of the account and makes a token.
func (s *Server) login(body []byte) Reply {
	var req struct {
		Identifier struct{ User string }
		Password   string
		DeviceID   string `json:"device_id"`
	}
	json.Unmarshal(body, &req)
	local, _, _ := strings.Cut(strings.TrimPrefix(s.UserID, "@"), ":")
	if (req.Identifier.User != s.UserID && req.Identifier.User != local) || req.Password != s.Password {
		return Error(http.StatusForbidden, "M_FORBIDDEN")
	}
	s.seq++
	dev := req.DeviceID
	if dev == "" {
		dev = fmt.Sprintf("DEV%d", s.seq)
	}
	tok := fmt.Sprintf("tok%d", s.seq)
	s.tokens[tok] = [2]string{s.UserID, dev}
	return okJSON(map[string]string{"user_id": s.UserID, "device_id": dev, "access_token": tok})
}

// keys answers keys/upload, keys/query and keys/claim (Matrix spec,
// "End-to-end encryption": key management API) as far as a device needs
// to start its crypto: uploaded device keys are listed by query, one-time
// keys are counted but never claimed.
func (s *Server) keys(op string, body []byte, who [2]string) Reply {
	switch op {
	case "upload":
		var req struct {
			DeviceKeys  json.RawMessage            `json:"device_keys"`
			OneTimeKeys map[string]json.RawMessage `json:"one_time_keys"`
		}
		if json.Unmarshal(body, &req) != nil {
			return Error(http.StatusBadRequest, "M_BAD_JSON")
		}
		if len(req.DeviceKeys) > 0 && string(req.DeviceKeys) != "null" {
			if s.deviceKeys == nil {
				s.deviceKeys = map[string]map[string]json.RawMessage{}
			}
			if s.deviceKeys[who[0]] == nil {
				s.deviceKeys[who[0]] = map[string]json.RawMessage{}
			}
			s.deviceKeys[who[0]][who[1]] = req.DeviceKeys
		}
		return okJSON(map[string]any{"one_time_key_counts": map[string]int{"signed_curve25519": len(req.OneTimeKeys)}})
	case "query":
		var req struct {
			DeviceKeys map[string][]string `json:"device_keys"`
		}
		if json.Unmarshal(body, &req) != nil {
			return Error(http.StatusBadRequest, "M_BAD_JSON")
		}
		out := map[string]map[string]json.RawMessage{}
		for user, devs := range req.DeviceKeys {
			out[user] = map[string]json.RawMessage{}
			for dev, k := range s.deviceKeys[user] {
				if len(devs) == 0 || slices.Contains(devs, dev) {
					out[user][dev] = k
				}
			}
		}
		return okJSON(map[string]any{"device_keys": out, "failures": map[string]any{}})
	case "claim":
		return okJSON(map[string]any{"one_time_keys": map[string]any{}, "failures": map[string]any{}})
	}
	return Error(http.StatusNotFound, "M_UNRECOGNIZED")
}
