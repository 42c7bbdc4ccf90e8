package matrix

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"math"
	"net/http"
	"slices"
	"strconv"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/doorbell/intercom/callengine"
	"github.com/doorbell/intercom/internal/runloop"
)

// callEventTypes are the 1:1 VoIP event types the sync filter asks for by
// name (Matrix spec, VoIP module; MSC2746, MSC2747, MSC3077, MSC3086; the
// unstable names js-sdk still sends). The wildcards after them cover
// future types on homeservers that support wildcards (Synapse, Dendrite on
// PostgreSQL); Dendrite on SQLite matches filter types exactly and would
// return nothing for the wildcards alone.
var callEventTypes = []string{
	"m.call.invite", "m.call.candidates", "m.call.answer", "m.call.select_answer",
	"m.call.reject", "m.call.negotiate", "m.call.hangup",
	"m.call.sdp_stream_metadata_changed", "m.call.asserted_identity", "m.call.replaces",
	"org.matrix.call.sdp_stream_metadata_changed", "org.matrix.call.asserted_identity",
	"m.call.*", "org.matrix.call.*",
}

// syncFilter keeps /sync down to what the intercom needs: call events in
// the timeline of joined rooms and the membership events that carry
// invites. Presence, receipts, typing and account data are dropped where
// the homeserver understands the "*" wildcard.
//
// With messages set, the timeline also carries the room messages and
// reactions residents open the door with (messageEventTypes).
//
// With encryption, the timeline also carries m.room.encrypted, and the
// state and timeline carry every member and m.room.encryption (no lazy
// loading): the crypto shares room keys with all members' devices, so it
// must know all members.
func syncFilter(messages, encryption bool) *mautrix.Filter {
	none := &mautrix.FilterPart{NotTypes: []event.Type{{Type: "*"}}}
	names := callEventTypes
	if messages {
		names = append(slices.Clip(names), messageEventTypes...)
	}
	state := &mautrix.FilterPart{Types: []event.Type{event.StateMember}, LazyLoadMembers: !encryption}
	if encryption {
		names = append(slices.Clip(names), event.EventEncrypted.Type, event.StateMember.Type, event.StateEncryption.Type)
		state.Types = append(state.Types, event.StateEncryption)
	}
	types := make([]event.Type, len(names))
	for i, t := range names {
		types[i] = event.Type{Type: t}
	}
	return &mautrix.Filter{
		AccountData: none,
		Presence:    none,
		Room: &mautrix.RoomFilter{
			AccountData: none,
			Ephemeral:   none,
			State:       state,
			Timeline:    &mautrix.FilterPart{Types: types, Limit: 50},
		},
	}
}

// syncResponse is the part of a /sync response the intercom reads. Events
// stay raw and are decoded one by one, so one odd event cannot make the
// whole response undecodable (and the sync loop stuck on it).
type syncResponse struct {
	NextBatch string `json:"next_batch"`
	Rooms     struct {
		Join map[id.RoomID]struct {
			Timeline struct {
				Events []json.RawMessage `json:"events"`
			} `json:"timeline"`
		} `json:"join"`
		Invite map[id.RoomID]struct {
			InviteState struct {
				Events []json.RawMessage `json:"events"`
			} `json:"invite_state"`
		} `json:"invite"`
		Leave map[id.RoomID]json.RawMessage `json:"leave"`
	} `json:"rooms"`
}

// syncEvent is one client-format event with its content left raw.
type syncEvent struct {
	ID             string          `json:"event_id"`
	Type           string          `json:"type"`
	Sender         string          `json:"sender"`
	StateKey       *string         `json:"state_key"`
	Content        json.RawMessage `json:"content"`
	OriginServerTS json.RawMessage `json:"origin_server_ts"`
	Unsigned       json.RawMessage `json:"unsigned"`
}

// jsonMillis reads a JSON number of milliseconds; anything else, negative
// or beyond float64's exact integers gives 0.
func jsonMillis(raw json.RawMessage) int64 {
	return max(jsonSignedMillis(raw), 0)
}

// jsonSignedMillis is jsonMillis with negative numbers kept.
func jsonSignedMillis(raw json.RawMessage) int64 {
	var f float64
	if len(raw) == 0 || json.Unmarshal(raw, &f) != nil || math.Abs(f) > 1<<53 || math.IsNaN(f) {
		return 0
	}
	return int64(f)
}

func (e *syncEvent) roomEvent(room id.RoomID) callengine.RoomEvent {
	ev := callengine.RoomEvent{
		ID:      e.ID,
		Room:    callengine.RoomID(room),
		Sender:  callengine.UserID(e.Sender),
		Type:    e.Type,
		Content: e.Content,
	}
	if ms := jsonMillis(e.OriginServerTS); ms > 0 {
		ev.Timestamp = time.UnixMilli(ms)
	}
	var unsigned struct {
		Age json.RawMessage `json:"age"`
	}
	if json.Unmarshal(e.Unsigned, &unsigned) == nil {
		// A negative age is kept: it is suspicious (issue 19, finding
		// 3), not the same as none.
		ev.Age = time.Duration(jsonSignedMillis(unsigned.Age)) * time.Millisecond
	}
	return ev
}

// Run is the sync loop. It delivers call events (types "m.call.*" and
// "org.matrix.call.*"), and with Options.Messages room messages and
// reactions, from the timelines of joined rooms to handler, except those
// sent by the intercom's own user, and joins rooms that a
// configured resident invites the intercom to. It returns only when ctx is
// done, with ctx's cause.
//
// handler runs on the sync goroutine and must not block: the engine
// enqueues. Event content is passed raw and unchecked.
//
// The first sync without a stored sync token is backlog (js-sdk and
// dart-sdk also ignore call events in their initial sync,
// shared/matrix-voip.md §1.8): its events are not delivered, only its
// invites are handled. The same holds for messages: a door command in the
// backlog is history, never an order. The sync token is stored after each sync, once its
// events have been handed over.
//
// Failures of /sync are retried forever with exponential backoff (0.5 s
// doubling to syncBackoffMax, 4 s, jittered, reset on success; a 429's
// own wait up to rateLimitMax), so the loop outlives the homeserver going
// away and notices its return within a few seconds. The first failure
// makes the session unhealthy (Status), and the /sync after a failure
// asks for an immediate answer, so that it turns healthy again as soon as
// the homeserver answers rather than a long poll later. A rejected access token is replaced by a new
// password login if a password is configured. Only one Run may be active
// at a time (ErrRunning).
func (s *Session) Run(ctx context.Context, handler func(callengine.RoomEvent)) error {
	if _, err := s.client(); err != nil {
		return err
	}
	if !s.running.CompareAndSwap(false, true) {
		return ErrRunning
	}
	defer s.running.Store(false)
	since, err := s.store.NextBatch()
	if err != nil {
		s.log.Error("read stored sync token, starting without it", "err", err)
		since = ""
	}
	l := &syncLoop{s: s, handler: handler, since: since, saved: since, pending: map[id.RoomID]id.UserID{}}
	if e := s.crypt.Load(); e != nil {
		// The room keys' warmer (e2ee.go) lives as long as this loop.
		wctx, stop := context.WithCancel(ctx)
		done := make(chan struct{})
		go func() { defer close(done); e.warmLoop(wctx) }()
		defer func() { stop(); <-done }()
	}
	failures := 0
	retry := runloop.Backoff{Base: loopBackoffBase, Max: syncBackoffMax, Jitter: s.jitter}
	for first := true; ; first = false {
		err := l.once(ctx, first || failures > 0)
		if ctx.Err() != nil {
			return context.Cause(ctx)
		}
		if err == nil {
			if e := s.crypt.Load(); e != nil {
				e.kick()
			}
			if failures > 0 {
				s.log.Info("matrix sync recovered", "failures", failures)
			}
			failures = 0
			retry.Reset()
			s.setStatus(func(st *Status) {
				st.LastSync, st.ConsecutiveFailures, st.LastError, st.UnreachableSince = s.now(), 0, "", time.Time{}
			})
			continue
		}
		failures++
		down := unreachable(err)
		s.setStatus(func(st *Status) {
			st.ConsecutiveFailures, st.LastError = failures, err.Error()
			st.SyncErrors++
			switch {
			case !down:
				st.UnreachableSince = time.Time{}
			case st.UnreachableSince.IsZero():
				st.UnreachableSince = s.now()
			}
		})
		if isUnknownToken(err) {
			s.log.Error("matrix access token rejected", "err", err)
			if rerr := s.relogin(ctx); rerr != nil && ctx.Err() == nil {
				s.log.Error("log in again", "err", rerr)
			}
		} else if failures == 1 {
			// Later failures of the same outage are logged at debug
			// level; the recovery is logged at info.
			s.log.Warn("matrix sync failed, backing off", "err", err)
		} else {
			s.log.Debug("matrix sync failed, backing off", "failures", failures, "err", err)
		}
		wait := retry.Next()
		if _, after := transient(err); after > wait {
			wait = min(after, rateLimitMax)
		}
		if s.sleep(ctx, wait) != nil {
			return context.Cause(ctx)
		}
	}
}

func (s *Session) setStatus(f func(*Status)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	f(&s.status)
}

// syncLoop is the state of one Run.
type syncLoop struct {
	s        *Session
	handler  func(callengine.RoomEvent)
	filterID string
	since    string // token of the next request
	saved    string // token last written to the store
	// pending holds invites from residents not joined yet: an invite shows
	// up in one incremental sync only, so a failed join is retried on the
	// next iterations instead of being lost.
	pending map[id.RoomID]id.UserID
	// rejected counts consecutive 400/404 answers to /sync.
	rejected int
	// filterRejected makes the next filter a new one, not the stored one.
	filterRejected bool
	// received is when the response being handled arrived.
	received time.Time
}

// once runs one /sync and handles its response. With immediate (the
// first /sync of a Run, or the first after a failure) it asks the
// homeserver not to long-poll.
func (l *syncLoop) once(ctx context.Context, immediate bool) error {
	c, err := l.s.client()
	if err != nil {
		return err
	}
	if l.filterID == "" {
		if l.filterID, err = l.s.ensureFilter(ctx, c, !l.filterRejected); err != nil {
			return err
		}
		l.filterRejected = false
	}
	timeout := pollTimeout
	if e := l.s.crypt.Load(); e != nil {
		if d := e.nextRetry(); d > 0 {
			// Events wait for their keys: come back in time to ask
			// for them, or to give up on them.
			timeout = min(timeout, d)
		}
	}
	if immediate || l.since == "" {
		// Answer at once at start-up and after a failure so that
		// Healthy turns true as soon as the homeserver answers.
		timeout = 0
	}
	query := map[string]string{
		"timeout": strconv.FormatInt(timeout.Milliseconds(), 10),
		"filter":  l.filterID,
	}
	if l.since != "" {
		query["since"] = l.since
	}
	var resp syncResponse
	rctx, cancel := context.WithTimeout(ctx, timeout+requestTimeout)
	body, hresp, err := c.MakeFullRequestWithResp(rctx, mautrix.FullRequest{
		Method:       http.MethodGet,
		URL:          c.BuildURLWithQuery(mautrix.ClientURLPath{"v3", "sync"}, query),
		ResponseJSON: &resp,
		MaxAttempts:  1,
	})
	cancel()
	if code := statusCode(err); code == http.StatusBadRequest || code == http.StatusNotFound {
		// The homeserver no longer knows the stored filter or sync
		// token (e.g. its database was reset). Drop the filter first,
		// then the token: that costs the backlog, but a loop stuck on a
		// bad token would cost every future event.
		l.rejected++
		if l.rejected == 1 {
			l.s.log.Warn("sync rejected, recreating the filter", "err", err)
			l.filterID, l.filterRejected = "", true
		} else if l.since != "" {
			l.s.log.Warn("sync rejected, dropping the sync token", "err", err)
			l.since = ""
		}
	}
	if err != nil {
		return fmt.Errorf("sync: %w", err)
	}
	l.rejected = 0
	l.received = l.s.now()
	l.s.sawServerTime(hresp)
	// The crypto and the call hooks read the same parts of the response
	// (to-device events, joined rooms' state and timeline): decoded once
	// for both, and only when one of them is there.
	crypt := l.s.crypt.Load()
	var parts *cryptoSync
	if crypt != nil || l.s.household.Load() != nil || l.s.rtc.Load() != nil {
		parts = &cryptoSync{}
		if err := json.Unmarshal(body, parts); err != nil {
			l.s.log.Warn("undecodable sync response for the crypto and the call hooks", "err", err)
			parts = nil
		}
	}
	var decrypted []ToDeviceEvent
	if crypt != nil && parts != nil {
		// Before anyone reads the response: room keys, device lists
		// and the state of encrypted rooms (e2ee.go).
		decrypted = crypt.handleSync(ctx, parts, l.since == "")
	}
	l.handle(ctx, c, &resp, l.since == "")
	if parts != nil {
		l.s.handleStateHooks(&parts.householdSync, decrypted, l.since == "") // household.go, rtc.go: call memberships, to-device events, declines
	}
	if resp.NextBatch != "" {
		l.since = resp.NextBatch
	}
	if l.since != l.saved {
		if err := l.s.store.SaveNextBatch(l.since); err != nil {
			l.s.log.Error("save sync token", "err", err)
		} else {
			l.saved = l.since
		}
	}
	return nil
}

// handle processes invites and delivers call events of one response.
func (l *syncLoop) handle(ctx context.Context, c *mautrix.Client, resp *syncResponse, initial bool) {
	self := c.UserID
	// Invites left alone earlier whose sender a reload made a resident.
	maps.Copy(l.pending, l.s.residentInvites())
	for _, room := range slices.Sorted(maps.Keys(resp.Rooms.Invite)) {
		inv := resp.Rooms.Invite[room]
		inviter, forged := inviterOf(inv.InviteState.Events, self)
		switch {
		case forged:
			// Left alone as a stranger's would be; no inviter is
			// remembered, so a reload of the residents cannot take it up.
			l.s.log.Warn("ignoring room invite whose invite state names several inviters (forged by the inviting server)", "room_id", room)
		case inviter == "":
			l.s.log.Debug("invite without a membership event for us", "room_id", room)
		case l.s.isResident(inviter):
			l.pending[room] = inviter
			l.s.forgetInvite(room)
		default:
			// Left alone rather than rejected: rejecting tells a
			// stranger that the intercom exists and is online, and a
			// room that is never joined delivers nothing.
			l.s.log.Info("ignoring room invite from a non-resident", "room_id", room, "user_id", inviter)
			l.s.ignoreInvite(room, inviter)
		}
	}
	for room := range resp.Rooms.Join {
		delete(l.pending, room)
		l.s.forgetInvite(room)
	}
	for room := range resp.Rooms.Leave {
		delete(l.pending, room) // invite withdrawn
		l.s.forgetInvite(room)
	}
	l.joinPending(ctx, c)

	if initial {
		n := 0
		for _, j := range resp.Rooms.Join {
			n += len(j.Timeline.Events)
		}
		if n > 0 {
			l.s.log.Info("skipped call events of the initial sync (backlog)", "events", n)
		}
		return
	}
	crypt := l.s.crypt.Load()
	if crypt != nil {
		// Events that waited for their room keys come first: they were
		// sent before this response's.
		for _, ev := range crypt.retryWaiting(ctx) {
			if l.s.delivers(ev.Type) {
				// Received when its key came: the wait was the sender's.
				ev.Received = l.received
				l.handler(ev)
			}
		}
	}
	for _, room := range slices.Sorted(maps.Keys(resp.Rooms.Join)) {
		for _, raw := range resp.Rooms.Join[room].Timeline.Events {
			var e syncEvent
			if err := json.Unmarshal(raw, &e); err != nil {
				l.s.log.Warn("undecodable timeline event skipped", "room_id", room, "err", err)
				continue
			}
			if e.StateKey != nil || id.UserID(e.Sender) == self {
				continue
			}
			if e.Type == event.EventEncrypted.Type && crypt != nil {
				ev, ok := crypt.decryptTimeline(ctx, room, raw, e)
				if ok && l.s.delivers(ev.Type) {
					ev.Received = l.received
					l.handler(ev)
				}
				continue
			}
			if !l.s.delivers(e.Type) {
				continue
			}
			ev := e.roomEvent(room)
			ev.Received = l.received
			if crypt != nil {
				ev.Seal.RoomEncrypted = crypt.roomEncrypted(ctx, room)
			}
			l.handler(ev)
		}
	}
}

// joinPending tries once to join each invited room.
func (l *syncLoop) joinPending(ctx context.Context, c *mautrix.Client) {
	for _, room := range slices.Sorted(maps.Keys(l.pending)) {
		inviter := l.pending[room]
		jctx, cancel := context.WithTimeout(ctx, requestTimeout)
		_, err := c.JoinRoomByID(jctx, room)
		cancel()
		if err == nil {
			l.s.log.Info("joined room on a resident's invite", "room_id", room, "user_id", inviter)
			delete(l.pending, room)
			continue
		}
		if retry, _ := transient(err); retry && ctx.Err() == nil {
			l.s.log.Warn("join room failed, will retry", "room_id", room, "err", err)
			continue
		}
		l.s.log.Error("join room failed", "room_id", room, "user_id", inviter, "err", err)
		delete(l.pending, room)
	}
}

// inviterOf finds who invited self: the sender of the m.room.member event
// with state key self and membership invite in a room's invite state.
//
// The list is not the homeserver's alone. For an invite over federation
// the inviting server supplies the stripped state (invite_room_state,
// Matrix spec, server-server API: PUT /invite v2), unsigned and
// unchecked, and may put in it a member event for self naming a resident
// as its sender. The homeserver appends the real invite event after that
// stripped state (Synapse and Dendrite as a full client event with its
// event_id, Conduit in stripped form), and its sender is the one the
// inviting server signed for. So every invite membership for self in the
// list must name the same sender: if two disagree, the stripped state was
// forged and no inviter is trusted (forged is true). A list that repeats
// the real invite (stripped and full) is no forgery.
func inviterOf(events []json.RawMessage, self id.UserID) (inviter id.UserID, forged bool) {
	for _, raw := range events {
		var e struct {
			Type     string  `json:"type"`
			Sender   string  `json:"sender"`
			StateKey *string `json:"state_key"`
			Content  struct {
				Membership string `json:"membership"`
			} `json:"content"`
		}
		if json.Unmarshal(raw, &e) != nil || e.StateKey == nil {
			continue
		}
		if e.Type != event.StateMember.Type || id.UserID(*e.StateKey) != self || e.Content.Membership != string(event.MembershipInvite) {
			continue
		}
		switch sender := id.UserID(e.Sender); {
		case inviter == "":
			inviter = sender
		case sender != inviter:
			return "", true
		}
	}
	return inviter, false
}

// ensureFilter returns the ID of a filter equal to syncFilter: the stored
// one if reuse is set and the homeserver still has it unchanged, else a
// newly created one, which is then stored. Checking it costs one request
// per Run and keeps a firmware update that changes the filter from using a
// stale one.
func (s *Session) ensureFilter(ctx context.Context, c *mautrix.Client, reuse bool) (string, error) {
	want := s.rtcFilter(s.householdFilter(syncFilter(s.opts.Messages, s.opts.Encryption != nil)))
	stored, err := s.store.FilterID()
	if err != nil {
		s.log.Error("read stored filter ID", "err", err)
		stored = ""
	}
	if !reuse {
		stored = ""
	}
	if stored != "" {
		rctx, cancel := context.WithTimeout(ctx, requestTimeout)
		got, err := c.MakeRequest(rctx, http.MethodGet, c.BuildClientURL("v3", "user", c.UserID, "filter", stored), nil, nil)
		cancel()
		switch {
		case err == nil && sameFilter(got, want):
			return stored, nil
		case err == nil:
			s.log.Info("stored sync filter differs, creating a new one", "filter_id", stored)
		case statusCode(err) == http.StatusNotFound || statusCode(err) == http.StatusBadRequest || statusCode(err) == http.StatusForbidden:
			s.log.Info("stored sync filter unknown, creating a new one", "filter_id", stored, "err", err)
		default:
			return "", fmt.Errorf("get filter %s: %w", stored, err)
		}
	}
	rctx, cancel := context.WithTimeout(ctx, requestTimeout)
	resp, err := c.CreateFilter(rctx, want)
	cancel()
	if err != nil {
		return "", fmt.Errorf("create filter: %w", err)
	}
	if resp == nil || resp.FilterID == "" {
		return "", errors.New("create filter: response without filter_id")
	}
	if err := s.store.SaveFilterID(resp.FilterID); err != nil {
		s.log.Error("save filter ID", "err", err)
	}
	return resp.FilterID, nil
}

// sameFilter reports whether the homeserver's copy got of a filter says
// what want says: every field of want is in got with the same value.
// Fields only got has are ignored, because homeservers fill in defaults
// (Dendrite adds "event_format" and a "limit" to every part).
func sameFilter(got json.RawMessage, want *mautrix.Filter) bool {
	w, err := json.Marshal(want)
	if err != nil {
		return false
	}
	var g, wv any
	if json.Unmarshal(got, &g) != nil || json.Unmarshal(w, &wv) != nil {
		return false
	}
	return jsonSubset(wv, g)
}

// jsonSubset reports whether decoded JSON value a is contained in b:
// objects by key, recursively; everything else by equality.
func jsonSubset(a, b any) bool {
	switch av := a.(type) {
	case map[string]any:
		bv, ok := b.(map[string]any)
		if !ok {
			return false
		}
		for k, x := range av {
			if y, ok := bv[k]; !ok || !jsonSubset(x, y) {
				return false
			}
		}
		return true
	case []any:
		bv, ok := b.([]any)
		if !ok || len(av) != len(bv) {
			return false
		}
		for i := range av {
			if !jsonSubset(av[i], bv[i]) {
				return false
			}
		}
		return true
	default:
		return a == b
	}
}
