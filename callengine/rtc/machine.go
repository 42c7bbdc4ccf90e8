package rtc

import (
	"maps"
	"slices"
	"time"

	"github.com/doorbell/intercom/callengine"
	"github.com/doorbell/intercom/callengine/group"
)

// Phase is the MatrixRTC side's phase.
type Phase string

const (
	PhaseIdle    Phase = "idle"
	PhaseRinging Phase = "ringing" // joined the calls, rang, nobody joined yet
	PhaseInCall  Phase = "in_call" // a resident joined one call
)

// Target is one room to ring: a resident's direct room, or the household
// room (Group), whose ring mentions the whole room.
type Target struct {
	Room      callengine.RoomID
	Residents []callengine.UserID // whose joining answers, and whose decline counts
	Group     bool
	// Encrypted: the room is end-to-end encrypted, so the call's media
	// are too (mediakeys.go): the intercom makes and shares a media key
	// and uses the members' keys.
	Encrypted bool
}

// Config is what the machine knows about the intercom.
type Config struct {
	Self Device
	// ServiceURL is the JWT service advertised in foci_preferred, where
	// residents' clients fetch their tokens for the intercom's SFU.
	ServiceURL string
	// RingTimeout ends an unanswered ring; the notification's lifetime is
	// the same, capped at 90 s as js-sdk does.
	RingTimeout time.Duration
	// MembershipLifetime is the expires of the intercom's membership. The
	// homeserver may lack delayed events, so a membership left behind by
	// a crash lapses after this; it is refreshed a minute before.
	MembershipLifetime time.Duration
	// PresenceGrace is how long the answering resident may be missing from
	// the SFU (joining, reconnecting) before the call counts as ended.
	// Their membership alone proves nothing: without delayed events a
	// crashed client's membership stays until it expires.
	PresenceGrace time.Duration
	// AnswerSkew: a membership older than the ring by more than this is
	// not an answer (it is a leftover or an unrelated call).
	AnswerSkew time.Duration
	// KeyUseDelay is how long after sending a rotated media key the
	// intercom starts encrypting with it; KeyGrace how young a key must
	// be to be given to a new joiner instead of rotated (mediakeys.go).
	KeyUseDelay, KeyGrace time.Duration
	// NewKey makes a random media key of MediaKeyBytes; crypto/rand by
	// default (tests make predictable ones).
	NewKey func() []byte
}

// DefaultConfig returns the timings used unless configured otherwise.
func DefaultConfig(self Device, serviceURL string) Config {
	return Config{Self: self, ServiceURL: serviceURL, RingTimeout: 60 * time.Second,
		MembershipLifetime: 5 * time.Minute, PresenceGrace: 20 * time.Second, AnswerSkew: 30 * time.Second,
		KeyUseDelay: time.Second, KeyGrace: 10 * time.Second}
}

// --- Events ---

// Event is an input to Machine.Step.
type Event interface{ event() }

// RingRequested: the bell was pressed; ring these rooms.
type RingRequested struct{ Targets []Target }

// HangupRequested: end everything (API hangup, shutdown).
type HangupRequested struct{}

// AnsweredElsewhere: a classic call or the household call took the ring;
// stop ringing here. A call already answered here is kept.
type AnsweredElsewhere struct{}

// MemberChanged: a call.member state event seen in a room.
type MemberChanged struct {
	Room  callengine.RoomID
	Event group.MemberEvent
}

// MembershipSent reports the PUT of the intercom's membership.
type MembershipSent struct {
	Room    callengine.RoomID
	EventID string
	Err     error
}

// NotificationSent reports the ring notification's send.
type NotificationSent struct {
	Room    callengine.RoomID
	EventID string
	Err     error
}

// DeclineReceived: an org.matrix.msc4310.rtc.decline room event.
type DeclineReceived struct {
	Room    callengine.RoomID
	Sender  callengine.UserID
	Content []byte
}

// SFUChanged: the intercom's connection to the room's SFU came up, failed
// or ended (Connected false; Err says why, nil on a clean close).
type SFUChanged struct {
	Room      callengine.RoomID
	Connected bool
	Err       error
}

// ParticipantChanged: a remote participant arrived at or left the room's
// SFU; Identity is the LiveKit identity ("<user>:<device>").
type ParticipantChanged struct {
	Room     callengine.RoomID
	Identity string
	Present  bool
}

// TimerFired: a timer started by StartTimer ran out.
type TimerFired struct{ ID TimerID }

// MediaKeyReceived: a member's media key arrived (decoded and checked by
// DecodeEncryptionKeys).
type MediaKeyReceived struct{ Key MediaKey }

func (RingRequested) event()      {}
func (HangupRequested) event()    {}
func (AnsweredElsewhere) event()  {}
func (MemberChanged) event()      {}
func (MembershipSent) event()     {}
func (NotificationSent) event()   {}
func (DeclineReceived) event()    {}
func (SFUChanged) event()         {}
func (ParticipantChanged) event() {}
func (TimerFired) event()         {}
func (MediaKeyReceived) event()   {}

// --- Effects ---

// Effect is an output of Machine.Step for the adapter to execute.
type Effect interface{ effect() }

// PublishMembership: PUT the intercom's membership state event; report
// MembershipSent.
type PublishMembership struct {
	Room     callengine.RoomID
	StateKey string
	Content  Membership
}

// ClearMembership: PUT empty content on the intercom's membership (leave).
type ClearMembership struct {
	Room     callengine.RoomID
	StateKey string
}

// SendNotification: send the ring; report NotificationSent.
type SendNotification struct {
	Room    callengine.RoomID
	Content group.Notification
}

// JoinSFU: connect to the room's SFU and publish camera and microphone;
// report SFUChanged and ParticipantChanged.
type JoinSFU struct{ Room callengine.RoomID }

// LeaveSFU: disconnect from the room's SFU.
type LeaveSFU struct{ Room callengine.RoomID }

// StartTimer (re)starts a timer; StopTimer cancels it.
type StartTimer struct {
	ID    TimerID
	After time.Duration
}

// StopTimer cancels a timer.
type StopTimer struct{ ID TimerID }

// Answered: a resident joined the call in Room. Other ways of ringing
// (classic calls, the household call) must stop.
type Answered struct {
	Room callengine.RoomID
	By   Device
}

// Ended: the MatrixRTC side is idle again.
type Ended struct{ Reason string }

// Ignored: an input was dropped; logged by the adapter.
type Ignored struct {
	Room   callengine.RoomID
	Sender callengine.UserID
	What   string
	Reason string
}

// PhaseChanged: the phase changed.
type PhaseChanged struct{ Phase Phase }

// ShareMediaKey: send the intercom's media key for Room's call to these
// devices, Olm-encrypted (TypeEncryptionKeys).
type ShareMediaKey struct {
	Room  callengine.RoomID
	Index uint8
	Key   []byte
	To    []Device
}

// UseMediaKey: encrypt the intercom's media in Room's call with this key
// from now on.
type UseMediaKey struct {
	Room  callengine.RoomID
	Index uint8
	Key   []byte
}

// RemoteMediaKey: decrypt the media of the participant with this LiveKit
// identity in Room's call with this key when a frame names Index.
type RemoteMediaKey struct {
	Room     callengine.RoomID
	Identity string
	Index    uint8
	Key      []byte
}

func (PublishMembership) effect() {}
func (ClearMembership) effect()   {}
func (SendNotification) effect()  {}
func (JoinSFU) effect()           {}
func (LeaveSFU) effect()          {}
func (StartTimer) effect()        {}
func (StopTimer) effect()         {}
func (Answered) effect()          {}
func (Ended) effect()             {}
func (Ignored) effect()           {}
func (PhaseChanged) effect()      {}
func (ShareMediaKey) effect()     {}
func (UseMediaKey) effect()       {}
func (RemoteMediaKey) effect()    {}

// TimerKind names what a timer is for.
type TimerKind int

const (
	TimerRing     TimerKind = iota // whole ring; Room is empty
	TimerRefresh                   // membership refresh of Room
	TimerPresence                  // answerer missing from Room's SFU
	TimerKeyUse                    // a rotated media key of Room is due for use
)

// TimerID identifies a timer.
type TimerID struct {
	Kind TimerKind
	Room callengine.RoomID
}

// Reasons given in Ended.
const (
	ReasonNoAnswer          = "no_answer"
	ReasonDeclined          = "declined"
	ReasonAnsweredElsewhere = "answered_elsewhere"
	ReasonHangup            = "hangup"
	ReasonResidentLeft      = "resident_left"
	ReasonSFULost           = "sfu_lost"
	ReasonFailed            = "failed"
)

// --- Machine ---

type leg struct {
	target   Target
	created  time.Time // when the first membership was sent
	sent     string    // membership event ID, once known
	notified string    // notification event ID, once known
	declined map[callengine.UserID]bool
	members  map[string]Member // remote devices in the call, by Identity
	present  map[string]bool   // LiveKit identities at the SFU
	answered bool
	sfuUp    bool
	keys     *legKeys // encrypted rooms only
	// remote are the other members' SFUs joined to listen (multisfu.go),
	// by service URL.
	remote map[string]bool

	// identities are each member's possible LiveKit identities
	// (identity.go: "<user>:<device>" or the /get_token hash).
	identities map[string][]string

	// first is the first membership's event ID and firstTS its
	// origin_server_ts once sync shows it: the homeserver's clock, which
	// a refresh's created_ts must be on (phones judge expiry by it; the
	// board's clock, created above, may be off). ownSeen keeps the
	// timestamps of the intercom's own membership events sync showed
	// before their send reported its ID (the echo can win the race).
	first   string
	firstTS time.Time
	ownSeen map[string]time.Time
}

// Machine is the MatrixRTC ringing state machine. It is not safe for
// concurrent use: one goroutine owns it.
type Machine struct {
	cfg       Config
	phase     Phase
	since     time.Time
	ringStart time.Time
	legs      map[callengine.RoomID]*leg
	answerer  Device
	reason    string // of the last Ended
}

// New returns an idle machine.
func New(cfg Config) *Machine {
	return &Machine{cfg: cfg, phase: PhaseIdle, legs: map[callengine.RoomID]*leg{}}
}

// Phase is the current phase.
func (m *Machine) Phase() Phase { return m.phase }

// Step applies one event at time now and returns the effects to execute,
// in order.
func (m *Machine) Step(now time.Time, ev Event) []Effect {
	var out []Effect
	before := m.phase
	switch e := ev.(type) {
	case RingRequested:
		out = m.ring(now, e)
	case HangupRequested:
		out = m.endAll(now, ReasonHangup)
	case AnsweredElsewhere:
		if m.phase == PhaseRinging {
			out = m.endAll(now, ReasonAnsweredElsewhere)
		}
	case MembershipSent:
		out = m.membershipSent(now, e)
	case NotificationSent:
		if l := m.legs[e.Room]; l != nil && e.Err == nil {
			l.notified = e.EventID
		}
	case DeclineReceived:
		out = m.decline(now, e)
	case MemberChanged:
		out = m.member(now, e)
	case SFUChanged:
		out = m.sfu(now, e)
	case ParticipantChanged:
		out = m.participant(e)
	case TimerFired:
		out = m.timer(now, e.ID)
	case MediaKeyReceived:
		out = m.mediaKey(e.Key)
	case RemoteSFUChanged:
		out = m.remoteSFU(e)
	case TransportChanged: // transport.go
		m.cfg.ServiceURL = e.ServiceURL
	}
	if m.phase != before {
		m.since = now
		out = append(out, PhaseChanged{Phase: m.phase})
	}
	return out
}

func (m *Machine) ring(now time.Time, e RingRequested) []Effect {
	if m.phase != PhaseIdle {
		return []Effect{Ignored{What: "ring", Reason: "busy: " + string(m.phase)}}
	}
	if m.cfg.ServiceURL == "" {
		// A membership without a transport is one no client can join.
		return []Effect{Ignored{What: "ring", Reason: "no MatrixRTC transport known yet"}}
	}
	var out []Effect
	for _, t := range e.Targets {
		if t.Room == "" || m.legs[t.Room] != nil {
			continue
		}
		l := &leg{target: t, created: now, declined: map[callengine.UserID]bool{},
			members: map[string]Member{}, present: map[string]bool{}}
		m.legs[t.Room] = l
		if t.Encrypted {
			// The first key is used at once: the SFU connection must
			// never publish a frame in the clear.
			l.keys = newLegKeys(m.newKey(), now)
			out = append(out, UseMediaKey{Room: t.Room, Index: l.keys.index, Key: l.keys.key})
		}
		out = append(out,
			PublishMembership{Room: t.Room, StateKey: StateKey(m.cfg.Self),
				Content: NewMembership(m.cfg.Self, t.Room, m.cfg.ServiceURL, m.cfg.MembershipLifetime, time.Time{})},
			JoinSFU{Room: t.Room},
			StartTimer{ID: TimerID{Kind: TimerRefresh, Room: t.Room}, After: m.refreshAfter()})
	}
	if len(m.legs) == 0 {
		return nil
	}
	m.phase, m.ringStart = PhaseRinging, now
	return append(out, StartTimer{ID: TimerID{Kind: TimerRing}, After: m.cfg.RingTimeout})
}

func (m *Machine) refreshAfter() time.Duration {
	return max(m.cfg.MembershipLifetime-time.Minute, m.cfg.MembershipLifetime/2)
}

func (m *Machine) membershipSent(now time.Time, e MembershipSent) []Effect {
	l := m.legs[e.Room]
	if l == nil {
		return nil
	}
	if e.Err != nil {
		if l.sent != "" {
			return nil // a refresh failed; the next one may pass, and expiry is far
		}
		return m.leave(now, e.Room, ReasonFailed)
	}
	first := l.sent == ""
	l.sent = e.EventID
	if first {
		l.first = e.EventID
		l.firstTS = l.ownSeen[e.EventID]
		l.ownSeen = nil
	}
	if !first || m.phase != PhaseRinging {
		return nil
	}
	return []Effect{SendNotification{Room: e.Room, Content: NewRing(l.target, e.EventID, now, m.cfg.RingTimeout)}}
}

func (m *Machine) decline(now time.Time, e DeclineReceived) []Effect {
	l := m.legs[e.Room]
	if l == nil || m.phase != PhaseRinging {
		return []Effect{Ignored{Room: e.Room, Sender: e.Sender, What: TypeDecline, Reason: "not ringing there"}}
	}
	ref, err := DecodeDecline(e.Content)
	switch {
	case err != nil:
		return []Effect{Ignored{Room: e.Room, Sender: e.Sender, What: TypeDecline, Reason: err.Error()}}
	case ref != l.notified || l.notified == "":
		return []Effect{Ignored{Room: e.Room, Sender: e.Sender, What: TypeDecline, Reason: "declines another notification"}}
	case !slices.Contains(l.target.Residents, e.Sender):
		return []Effect{Ignored{Room: e.Room, Sender: e.Sender, What: TypeDecline, Reason: "not a resident rung there"}}
	}
	l.declined[e.Sender] = true
	for _, u := range l.target.Residents {
		if !l.declined[u] {
			return nil // others in that room may still answer
		}
	}
	return m.leave(now, e.Room, ReasonDeclined)
}

func (m *Machine) member(now time.Time, e MemberChanged) []Effect {
	l := m.legs[e.Room]
	if l == nil {
		return nil // not in a call there: nothing to follow
	}
	mem, left, err := DecodeMember(e.Event)
	if err != nil {
		return []Effect{Ignored{Room: e.Room, Sender: e.Event.Sender, What: TypeMember, Reason: err.Error()}}
	}
	if mem.Device == m.cfg.Self {
		m.ownEcho(l, mem) // our own membership, echoed by sync
		return nil
	}
	id := mem.Identity()
	if left || (!mem.Expires.IsZero() && !mem.Expires.After(now)) {
		_, was := l.members[id]
		delete(l.members, id)
		l.setIdentities(id, nil)
		if was && l.answered && len(l.members) == 0 {
			return m.leave(now, e.Room, ReasonResidentLeft)
		}
		return append(m.distributeKeys(now, e.Room, l), m.followTransports(e.Room, l)...)
	}
	l.members[id] = mem
	l.setIdentities(id, Identities(mem.Device, MemberID(e.Event)))
	keys := append(m.distributeKeys(now, e.Room, l), m.followTransports(e.Room, l)...)
	if m.phase != PhaseRinging {
		return keys
	}
	out := m.answer(now, e.Room, l, mem)
	return append(keys, out...)
}

// answer takes a resident's membership in a ringing room as the answer
// when it may be one.
func (m *Machine) answer(now time.Time, room callengine.RoomID, l *leg, mem Member) []Effect {
	id := mem.Identity()
	if !slices.Contains(l.target.Residents, mem.User) {
		return []Effect{Ignored{Room: room, Sender: mem.User, What: TypeMember, Reason: "not a resident rung there"}}
	}
	if !mem.Seen.IsZero() && mem.Seen.Before(m.ringStart.Add(-m.cfg.AnswerSkew)) {
		return []Effect{Ignored{Room: room, Sender: mem.User, What: TypeMember, Reason: "membership older than the ring"}}
	}
	// The first resident to join answers; every other call is left.
	l.answered, m.answerer, m.phase = true, mem.Device, PhaseInCall
	out := []Effect{StopTimer{ID: TimerID{Kind: TimerRing}}, Answered{Room: room, By: mem.Device}}
	for _, r := range slices.Sorted(maps.Keys(m.legs)) {
		if r != room {
			out = append(out, m.leave(now, r, ReasonAnsweredElsewhere)...)
		}
	}
	if !l.memberPresent(id) {
		out = append(out, StartTimer{ID: TimerID{Kind: TimerPresence, Room: room}, After: m.cfg.PresenceGrace})
	}
	return out
}

func (m *Machine) sfu(now time.Time, e SFUChanged) []Effect {
	l := m.legs[e.Room]
	if l == nil {
		return nil
	}
	if e.Connected {
		l.sfuUp = true
		return nil
	}
	// Without the SFU the resident would join a call with no picture.
	return m.leave(now, e.Room, ReasonSFULost)
}

func (m *Machine) participant(e ParticipantChanged) []Effect {
	l := m.legs[e.Room]
	if l == nil {
		return nil
	}
	l.present[e.Identity] = e.Present
	if !l.answered {
		return nil
	}
	id := TimerID{Kind: TimerPresence, Room: e.Room}
	if m.anyMemberPresent(l) {
		return []Effect{StopTimer{ID: id}}
	}
	return []Effect{StartTimer{ID: id, After: m.cfg.PresenceGrace}}
}

func (m *Machine) anyMemberPresent(l *leg) bool {
	for id := range l.members {
		if l.memberPresent(id) {
			return true
		}
	}
	return false
}

func (m *Machine) timer(now time.Time, id TimerID) []Effect {
	switch id.Kind {
	case TimerRing:
		if m.phase == PhaseRinging {
			return m.endAll(now, ReasonNoAnswer)
		}
	case TimerRefresh:
		l := m.legs[id.Room]
		if l == nil {
			return nil
		}
		return []Effect{
			PublishMembership{Room: id.Room, StateKey: StateKey(m.cfg.Self), Content: m.refreshed(now, l, id.Room)},
			StartTimer{ID: id, After: m.refreshAfter()},
		}
	case TimerPresence:
		if l := m.legs[id.Room]; l != nil && l.answered && !m.anyMemberPresent(l) {
			return m.leave(now, id.Room, ReasonResidentLeft)
		}
	case TimerKeyUse:
		if l := m.legs[id.Room]; l != nil && l.keys != nil {
			return []Effect{UseMediaKey{Room: id.Room, Index: l.keys.index, Key: l.keys.key}}
		}
	}
	return nil
}

// maxOwnSeen bounds the own membership events remembered before the
// first send reports its ID; one is all a well-behaved homeserver shows.
const maxOwnSeen = 8

// ownEcho notes when the homeserver stamped the intercom's own first
// membership of the call in room.
func (m *Machine) ownEcho(l *leg, mem Member) {
	switch {
	case mem.Seen.IsZero() || mem.EventID == "" || !l.firstTS.IsZero():
	case l.first != "":
		if mem.EventID == l.first {
			l.firstTS = mem.Seen
		}
	case len(l.ownSeen) < maxOwnSeen:
		if l.ownSeen == nil {
			l.ownSeen = map[string]time.Time{}
		}
		l.ownSeen[mem.EventID] = mem.Seen
	}
}

// refreshed is the membership that keeps the call in room going: the
// same created_ts as the first, on the homeserver's clock, and an expires
// that runs lifetime past now (js-sdk copies created_ts and lengthens
// expires, so receivers see one continuous membership). The time since
// the first membership is measured on the board's clock, which may be
// off by hours but ticks at the right rate. If sync never showed the
// first event, created_ts is left out and expires counts from this
// event's own origin_server_ts (matrix-voip.md §4.2): still the
// homeserver's clock, never the board's.
func (m *Machine) refreshed(now time.Time, l *leg, room callengine.RoomID) Membership {
	if l.firstTS.IsZero() {
		return NewMembership(m.cfg.Self, room, m.cfg.ServiceURL, m.cfg.MembershipLifetime, time.Time{})
	}
	life := now.Sub(l.created) + m.cfg.MembershipLifetime
	return NewMembership(m.cfg.Self, room, m.cfg.ServiceURL, life, l.firstTS)
}

// leave leaves one room's call; when it was the last, the machine is idle.
func (m *Machine) leave(now time.Time, room callengine.RoomID, reason string) []Effect {
	if m.legs[room] == nil {
		return nil
	}
	l := m.legs[room]
	delete(m.legs, room)
	out := append(leaveRemotes(room, l),
		ClearMembership{Room: room, StateKey: StateKey(m.cfg.Self)},
		LeaveSFU{Room: room},
		StopTimer{ID: TimerID{Kind: TimerRefresh, Room: room}},
		StopTimer{ID: TimerID{Kind: TimerPresence, Room: room}},
		StopTimer{ID: TimerID{Kind: TimerKeyUse, Room: room}},
	)
	if len(m.legs) == 0 {
		out = append(out, m.idle(reason)...)
	}
	return out
}

func (m *Machine) endAll(now time.Time, reason string) []Effect {
	var out []Effect
	for _, r := range slices.Sorted(maps.Keys(m.legs)) {
		out = append(out, m.leave(now, r, reason)...)
	}
	return out
}

func (m *Machine) idle(reason string) []Effect {
	m.phase, m.answerer, m.reason = PhaseIdle, Device{}, reason
	return []Effect{StopTimer{ID: TimerID{Kind: TimerRing}}, Ended{Reason: reason}}
}

// RoomStatus is one joined call in Status.
type RoomStatus struct {
	Room     callengine.RoomID `json:"room_id"`
	Answered bool              `json:"answered"`
	SFU      bool              `json:"sfu_connected"`
	Members  []string          `json:"members"`
	// Encrypted: the call's media are end-to-end encrypted; KeyIndex is
	// the index of the intercom's current media key there.
	Encrypted bool  `json:"encrypted"`
	KeyIndex  uint8 `json:"key_index,omitempty"`
}

// Status is the MatrixRTC part of /api/status.
type Status struct {
	Phase      Phase        `json:"state"`
	Since      time.Time    `json:"since"`
	Rooms      []RoomStatus `json:"rooms"`
	AnsweredBy string       `json:"answered_by,omitempty"`
	LastEnd    string       `json:"last_end,omitempty"`
}

// Status describes the machine.
func (m *Machine) Status() Status {
	s := Status{Phase: m.phase, Since: m.since, Rooms: []RoomStatus{}, LastEnd: m.reason}
	if m.answerer != (Device{}) {
		s.AnsweredBy = m.answerer.Identity()
	}
	for _, r := range slices.Sorted(maps.Keys(m.legs)) {
		l := m.legs[r]
		rs := RoomStatus{Room: r, Answered: l.answered, SFU: l.sfuUp, Members: slices.Sorted(maps.Keys(l.members))}
		if l.keys != nil {
			rs.Encrypted, rs.KeyIndex = true, l.keys.index
		}
		s.Rooms = append(s.Rooms, rs)
	}
	return s
}
