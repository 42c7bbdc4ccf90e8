package group

import (
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"time"

	"github.com/doorbell/intercom/callengine"
)

// Device is one household device: a user and one of its devices.
type Device struct {
	User     callengine.UserID
	DeviceID string
}

// String is "user:device", the string both SDKs compare.
func (d Device) String() string { return string(d.User) + ":" + d.DeviceID }

// PlacesCall reports whether local places the mesh call to remote: dart-sdk
// (mesh_backend setupP2PCallWithNewMember) calls only when local
// "user:device" sorts before the remote's. The intercom follows dart-sdk's
// single string comparison, since its mesh peers are dart-sdk clients
// (js-sdk's two-step rule can differ when one user ID prefixes another,
// matrix-voip.md §4.5).
func PlacesCall(local, remote Device) bool { return local.String() < remote.String() }

// Phase is the household call's phase.
type Phase string

const (
	PhaseIdle    Phase = "idle"
	PhaseRinging Phase = "ringing" // joined and rung; nobody connected yet
	// PhaseLiveView: joined without a ring because a device allowed to
	// watch joined the call; nobody connected yet.
	PhaseLiveView Phase = "live_view"
	PhaseInCall   Phase = "in_call" // at least one device connected
)

// Config is what the machine knows about the intercom.
type Config struct {
	Self Device
	// SessionID is the intercom's membershipID and sender_session_id,
	// made once per process start (dart-sdk VoIP.currentSessionId).
	SessionID string
	// Room is the household room; its ID is also the call_id of the
	// membership and the conf_id of to-device events.
	Room callengine.RoomID
	// RingTimeout: if no device connects within it, the intercom leaves.
	// It is also the lifetime of the ring notification.
	RingTimeout time.Duration
	// InviteLifetime is the lifetime of invites (dart-sdk
	// callInviteLifetime, 60 s).
	InviteLifetime time.Duration
	// ConnectTimeout bounds a call from setup to connected media.
	ConnectTimeout time.Duration
	// Family is the to-device family of calls the intercom places.
	Family Family
	// LiveView lists the users allowed to watch the door without a ring
	// (live_view.allowed, default the residents). A device of theirs that
	// joins the call while the intercom is out of it makes the intercom
	// join, without ringing, and connect to the allowed users' devices
	// only, as a 1:1 live-view call does. Nil: nobody.
	LiveView map[callengine.UserID]bool
	// MaxDevicesPerUser bounds the devices of one user the intercom
	// takes part in the call with; the others are treated as absent
	// (household.max_devices_per_user). Zero means
	// DefaultMaxDevicesPerUser.
	MaxDevicesPerUser int
	// MaxCalls bounds the calls (peer connections) of the mesh at once;
	// invites beyond it are rejected (household.max_calls). Zero means
	// DefaultMaxCalls.
	MaxCalls int
	// DisconnectedGrace: a connected call whose media stays disconnected
	// this long is being recovered (js-sdk restarts ICE after 2 s too).
	// Zero means DefaultDisconnectedGrace.
	DisconnectedGrace time.Duration
	// RestartTimeout bounds the recovery of a connected call whose media
	// was lost; then it ends with ice_failed. Zero means
	// DefaultRestartTimeout.
	RestartTimeout time.Duration
	// RestartRetry: an ICE restart of the intercom's that has not
	// connected within it is made again. pion gathers candidates only on
	// interfaces that are up, so a restart made while the link was down
	// offers nothing to connect with once it is back; browsers gather
	// again by themselves, pion does not. Zero means DefaultRestartRetry.
	RestartRetry time.Duration
}

// Recovery of a connected call whose media was lost (issue 15: a network
// blip resumes the media through an ICE restart). The classic path's
// machine uses the same grace and bound.
const (
	DefaultDisconnectedGrace = 2 * time.Second
	DefaultRestartTimeout    = 15 * time.Second
	// DefaultRestartRetry leaves a restart on a LAN (a few round trips)
	// or through TURN (an allocation more) time to connect, and bounds
	// link back → media at about this plus one signalling round trip.
	DefaultRestartRetry = 3 * time.Second
)

// Limits of the mesh unless configured otherwise (issue 19, finding 5).
// Every membership state key a member publishes could otherwise become a
// PeerConnection: its ICE agent, DTLS handshake, SRTP session and a copy
// of the door's stream on the uplink.
const (
	// DefaultMaxDevicesPerUser: a phone, a tablet, a laptop and a wall
	// panel; famedly's clients publish one membership per device.
	DefaultMaxDevicesPerUser = 4
	// DefaultMaxCalls: four residents with four devices each. Sixteen
	// copies of the stream at video.bitrate (600 kbit/s, up to 1.5
	// Mbit/s) are 10–24 Mbit/s of upload, about what a household's line
	// carries; beyond it every call degrades. With devices capped per
	// user, one member holds at most a quarter of the calls.
	DefaultMaxCalls = 16
)

// DefaultConfig returns the timings used unless configured otherwise.
func DefaultConfig(self Device, session string, room callengine.RoomID) Config {
	return Config{Self: self, SessionID: session, Room: room, RingTimeout: 60 * time.Second,
		InviteLifetime: 60 * time.Second, ConnectTimeout: 30 * time.Second, Family: FamilyFamedly,
		MaxDevicesPerUser: DefaultMaxDevicesPerUser, MaxCalls: DefaultMaxCalls,
		DisconnectedGrace: DefaultDisconnectedGrace, RestartTimeout: DefaultRestartTimeout, RestartRetry: DefaultRestartRetry}
}

func (c Config) maxDevicesPerUser() int {
	if c.MaxDevicesPerUser > 0 {
		return c.MaxDevicesPerUser
	}
	return DefaultMaxDevicesPerUser
}

func (c Config) maxCalls() int {
	if c.MaxCalls > 0 {
		return c.MaxCalls
	}
	return DefaultMaxCalls
}

func (c Config) disconnectedGrace() time.Duration {
	if c.DisconnectedGrace > 0 {
		return c.DisconnectedGrace
	}
	return DefaultDisconnectedGrace
}

func (c Config) restartTimeout() time.Duration {
	if c.RestartTimeout > 0 {
		return c.RestartTimeout
	}
	return DefaultRestartTimeout
}

func (c Config) restartRetry() time.Duration {
	if c.RestartRetry > 0 {
		return c.RestartRetry
	}
	return DefaultRestartRetry
}

// --- Events ---

// Event is an input to Machine.Step.
type Event interface{ event() }

// RingRequested: the bell was pressed. The intercom joins the group call
// if not in it and rings the household.
type RingRequested struct{}

// LeaveRequested ends the household call (hang up every device, clear the
// membership).
type LeaveRequested struct{}

// AnsweredElsewhere: the ring was answered on another path (a resident's
// classic call, MatrixRTC). If no household device took this ring, the
// intercom stops ringing here: it leaves the call, or, when devices
// allowed to watch were already connected for a live view, hangs up the
// rest and goes back to that live view.
type AnsweredElsewhere struct{}

// MemberChanged is a membership state event of the household room, of
// TypeMember or TypeElementCallMember.
type MemberChanged struct{ Event MemberEvent }

// RoomMemberChanged is an m.room.member change of the household room.
// Memberships of users who are not joined do not count.
type RoomMemberChanged struct {
	User       callengine.UserID
	Membership string // join, leave, ban, invite, knock
}

// ToDeviceReceived is a to-device event, raw and untrusted.
type ToDeviceReceived struct {
	Sender  callengine.UserID
	Type    string
	Content json.RawMessage
}

// MembershipPublished is the outcome of PublishMembership.
type MembershipPublished struct {
	EventID string
	Err     error
}

// OfferCreated is the outcome of CreateOffer: a peer with its offer.
type OfferCreated struct {
	CallID   callengine.CallID
	SDP      string
	StreamID string
	Err      error
}

// OfferAccepted is the outcome of AcceptOffer: the local answer.
type OfferAccepted struct {
	CallID   callengine.CallID
	SDP      string
	StreamID string
	Err      error
}

// AnswerApplied is the outcome of ApplyAnswer.
type AnswerApplied struct {
	CallID callengine.CallID
	Err    error
}

// NegotiationAnswered is the outcome of AnswerNegotiation.
type NegotiationAnswered struct {
	CallID callengine.CallID
	SDP    string
	Err    error
}

// RestartOffered is the outcome of RestartICE: the local offer with new
// ICE credentials.
type RestartOffered struct {
	CallID callengine.CallID
	SDP    string
	Err    error
}

// RestartAnswerApplied is the outcome of ApplyRestartAnswer.
type RestartAnswerApplied struct {
	CallID callengine.CallID
	Err    error
}

// SendFailed reports a to-device event of a call the homeserver did not
// take (SendToDevice with its CallID and Type).
type SendFailed struct {
	CallID callengine.CallID
	Type   string
}

// LocalCandidates are candidates the local peer of a call gathered.
type LocalCandidates struct {
	CallID     callengine.CallID
	Candidates []callengine.Candidate
}

// PeerChanged is a connection state change of a call's peer.
type PeerChanged struct {
	CallID callengine.CallID
	State  callengine.PeerState
}

// TimerFired is a timer started by StartTimer running out.
type TimerFired struct{ ID TimerID }

func (RingRequested) event()        {}
func (LeaveRequested) event()       {}
func (AnsweredElsewhere) event()    {}
func (MemberChanged) event()        {}
func (RoomMemberChanged) event()    {}
func (ToDeviceReceived) event()     {}
func (MembershipPublished) event()  {}
func (OfferCreated) event()         {}
func (OfferAccepted) event()        {}
func (AnswerApplied) event()        {}
func (NegotiationAnswered) event()  {}
func (RestartOffered) event()       {}
func (SendFailed) event()           {}
func (RestartAnswerApplied) event() {}
func (LocalCandidates) event()      {}
func (PeerChanged) event()          {}
func (TimerFired) event()           {}

// --- Effects ---

// Effect is an output of Machine.Step for the runner to execute.
type Effect interface{ effect() }

// PublishMembership puts the own membership state event. Its outcome comes
// back as MembershipPublished. Content with no memberships is a leave.
type PublishMembership struct {
	StateKey string
	Content  MemberContent
}

// SendNotification sends the ring into the household room.
type SendNotification struct{ Content Notification }

// SendToDevice sends one to-device message.
type SendToDevice struct {
	To      Device
	Type    string
	Content json.RawMessage
	CallID  callengine.CallID
}

// CreateOffer makes a peer with a ready offer (PeerFactory.NewPeer); the
// outcome comes back as OfferCreated.
type CreateOffer struct{ CallID callengine.CallID }

// AcceptOffer makes a peer answering SDP (PeerFactory.AcceptOffer); the
// outcome comes back as OfferAccepted.
type AcceptOffer struct {
	CallID callengine.CallID
	SDP    string
}

// ApplyAnswer applies the remote answer; outcome AnswerApplied.
type ApplyAnswer struct {
	CallID callengine.CallID
	SDP    string
}

// AnswerNegotiation answers a renegotiation offer (ICE restart, hold);
// outcome NegotiationAnswered.
type AnswerNegotiation struct {
	CallID callengine.CallID
	SDP    string
}

// RestartICE asks a call's peer for an offer with new ICE credentials
// (callengine.Peer.RestartICE); outcome RestartOffered.
type RestartICE struct{ CallID callengine.CallID }

// ApplyRestartAnswer applies the remote's answer to the intercom's ICE
// restart offer; outcome RestartAnswerApplied.
type ApplyRestartAnswer struct {
	CallID callengine.CallID
	SDP    string
}

// ApplyCandidates hands remote candidates to a call's peer.
type ApplyCandidates struct {
	CallID     callengine.CallID
	Candidates []callengine.Candidate
}

// ClosePeer closes a call's peer.
type ClosePeer struct{ CallID callengine.CallID }

// StartTimer (re)starts a timer.
type StartTimer struct {
	ID    TimerID
	After time.Duration
}

// StopTimer cancels a timer.
type StopTimer struct{ ID TimerID }

// Ignored reports untrusted input the machine dropped, for the log.
type Ignored struct {
	Sender callengine.UserID
	Type   string
	Reason string
	// Quiet: logged at debug, not info. Anyone on Matrix can send the
	// intercom to-device events; a stranger's must not flood the log.
	Quiet bool
}

// PhaseChanged reports a new phase.
type PhaseChanged struct{ Phase Phase }

func (PublishMembership) effect()  {}
func (SendNotification) effect()   {}
func (SendToDevice) effect()       {}
func (CreateOffer) effect()        {}
func (AcceptOffer) effect()        {}
func (ApplyAnswer) effect()        {}
func (AnswerNegotiation) effect()  {}
func (RestartICE) effect()         {}
func (ApplyRestartAnswer) effect() {}
func (ApplyCandidates) effect()    {}
func (ClosePeer) effect()          {}
func (StartTimer) effect()         {}
func (StopTimer) effect()          {}
func (Ignored) effect()            {}
func (PhaseChanged) effect()       {}

// TimerKind names a timer.
type TimerKind int

const (
	TimerRing         TimerKind = iota + 1 // nobody connected in time: leave
	TimerRefresh                           // re-send the own membership
	TimerExpiry                            // a member's membership expires
	TimerConnect                           // one call never connected
	TimerReorder                           // a seq gap waited long enough
	TimerDisconnected                      // a call's media disconnected for DisconnectedGrace: recover it
	TimerRestart                           // a call's media did not recover within RestartTimeout: ice_failed
	TimerRetry                             // the intercom's ICE restart did not connect: restart again
)

// TimerID identifies a timer: its kind and, for per-call timers, the call.
type TimerID struct {
	Kind TimerKind
	Key  string
}

// --- Machine ---

type legState string

const (
	legCreating   legState = "creating"   // making the peer and offer
	legInviting   legState = "inviting"   // invite sent
	legAnswering  legState = "answering"  // answer being applied
	legAccepting  legState = "accepting"  // answering their invite
	legConnecting legState = "connecting" // signalling done, ICE/DTLS going
	legConnected  legState = "connected"
	// legHeld: an invite from a device not allowed to watch, during a live
	// view; it is answered if the bell rings within its lifetime.
	legHeld legState = "held"
)

// maxPendingCandidates bounds candidates held for a call whose peer is not
// ready.
const maxPendingCandidates = 128

type leg struct {
	id       callengine.CallID
	peer     Device
	session  string // the remote's membershipID when the call began
	outbound bool
	family   Family
	state    legState
	seqOut   int64
	party    callengine.PartyID
	streamID string
	// remote candidates before the peer can take them; local candidates
	// before the invite or answer went out.
	pendingRemote []callengine.Candidate
	pendingLocal  []callengine.Candidate
	offer         string // a held invite's SDP
	// lost: the connected call's media is lost and being recovered
	// (TimerRestart runs). restarting: the intercom's ICE restart offer
	// is being made or is out, waiting for the answer; unanswered counts
	// the retries that found it still unanswered.
	lost, restarting bool
	unanswered       int
}

func (l *leg) peerReady() bool { return l.state == legConnecting || l.state == legConnected }

// userMembers holds one user's famedly memberships by state key. The
// machine indexes them by user, so finding a user's devices never looks
// at another user's keys (issue 19, finding 5: every member's keys were
// sorted per user on each event, seconds for one user with 1,000 keys).
type userMembers struct {
	keys  []string // sorted
	lists map[string][]Membership
}

func (u *userMembers) set(key string, list []Membership) {
	if _, ok := u.lists[key]; !ok {
		i, _ := slices.BinarySearch(u.keys, key)
		u.keys = slices.Insert(u.keys, i, key)
	}
	u.lists[key] = list
}

// all is every membership of the user, in state key order.
func (u *userMembers) all() []Membership {
	var out []Membership
	for _, k := range u.keys {
		out = append(out, u.lists[k]...)
	}
	return out
}

// has reports whether a membership of device satisfies ok.
func (u *userMembers) has(device string, ok func(Membership) bool) bool {
	for _, k := range u.keys {
		for _, mb := range u.lists[k] {
			if mb.DeviceID == device && ok(mb) {
				return true
			}
		}
	}
	return false
}

func (u *userMembers) remove(key string) {
	if i, ok := slices.BinarySearch(u.keys, key); ok {
		u.keys = slices.Delete(u.keys, i, i+1)
	}
	delete(u.lists, key)
}

// Machine is the household call. Zero value is not usable; use New.
type Machine struct {
	cfg   Config
	phase Phase

	joined       bool
	membershipEv string // event ID of the last own membership
	publishing   bool   // the joining membership is not confirmed yet
	ringPending  bool   // a notification waits for MembershipPublished
	liveOnly     bool   // joined for a live view: no ring, allowed users only
	ringExpired  bool
	rung         bool // rung, and no device connected since: the ring is open
	hadConnected bool
	rewaiting    bool // connected devices are gone, members remain: ring timeout runs
	nextCall     int
	members      map[callengine.UserID]*userMembers
	keyOwner     map[string]callengine.UserID // the user of each state key in members
	left         map[callengine.UserID]bool
	elementCall  map[string]ElementCallMember // by state key
	legs         map[callengine.CallID]*leg
	reorder      map[string]*Reorder // by sender + call ID, while the call is on or its events wait
	// ended are the reorder keys of the calls ended last, oldest first
	// (at most maxEndedCalls): their late or repeated events are dropped
	// without a reorder buffer of their own, which would otherwise take
	// an ended call's repeated invite for a new call.
	ended         []string
	expiryPlanned time.Time
	// seen holds the session of every valid device at the last reconcile:
	// a device missing from it (it joined, rejoined or restarted) may start
	// a live view; a refresh of its membership does not.
	seen map[Device]string
}

// New returns an idle machine.
func New(cfg Config) *Machine {
	return &Machine{cfg: cfg, phase: PhaseIdle, members: map[callengine.UserID]*userMembers{}, keyOwner: map[string]callengine.UserID{},
		left: map[callengine.UserID]bool{}, elementCall: map[string]ElementCallMember{},
		legs: map[callengine.CallID]*leg{}, reorder: map[string]*Reorder{}, seen: map[Device]string{}}
}

// ConfID is the group call's ID: the household room's ID.
func (m *Machine) ConfID() string { return string(m.cfg.Room) }

// Phase returns the current phase.
func (m *Machine) Phase() Phase { return m.phase }

// Joined reports whether the own membership is published.
func (m *Machine) Joined() bool { return m.joined }

// Step advances the machine by one event. It never blocks and never reads
// the clock: now is the time of the event.
func (m *Machine) Step(now time.Time, ev Event) []Effect {
	var out []Effect
	emit := func(e ...Effect) { out = append(out, e...) }
	switch e := ev.(type) {
	case RingRequested:
		m.ring(now, emit)
	case LeaveRequested:
		m.leave(emit, callengine.ReasonUserHangup)
	case AnsweredElsewhere:
		m.answeredElsewhere(emit)
	case MembershipPublished:
		m.published(now, e, emit)
	case MemberChanged:
		m.memberChanged(now, e.Event, emit)
	case RoomMemberChanged:
		if e.Membership == "join" {
			delete(m.left, e.User)
		} else if e.Membership != "" {
			m.left[e.User] = true
		}
		m.reconcile(now, emit)
	case ToDeviceReceived:
		m.toDevice(now, e, emit)
	case OfferCreated:
		m.offerCreated(now, e, emit)
	case OfferAccepted:
		m.offerAccepted(e, emit)
	case AnswerApplied:
		m.answerApplied(e, emit)
	case NegotiationAnswered:
		l := m.legs[e.CallID]
		if l == nil {
			return out
		}
		if e.Err != nil {
			m.endLeg(l, true, callengine.ReasonICEFailed, emit)
			break
		}
		m.send(l, callengine.TypeNegotiate, &callengine.Negotiate{
			Common:      m.common(l),
			Lifetime:    m.cfg.InviteLifetime.Milliseconds(),
			Description: callengine.SessionDescription{Type: "answer", SDP: e.SDP},
		}, emit)
	case RestartOffered:
		m.restartOffered(e, emit)
	case SendFailed:
		if l := m.legs[e.CallID]; l != nil && l.restarting && e.Type == ToDeviceType(l.family, callengine.TypeNegotiate) {
			// The offer never left (the homeserver is unreachable too):
			// the next retry makes another.
			l.restarting = false
		}
	case RestartAnswerApplied:
		if l := m.legs[e.CallID]; l != nil && e.Err != nil {
			// The restart is as good as lost; the retry makes another.
			emit(Ignored{Sender: l.peer.User, Type: callengine.TypeNegotiate, Reason: "apply the answer to our ICE restart: " + e.Err.Error()})
		}
	case LocalCandidates:
		l := m.legs[e.CallID]
		if l == nil {
			return out
		}
		if l.state == legCreating || l.state == legAccepting {
			if len(l.pendingLocal) < maxPendingCandidates {
				l.pendingLocal = append(l.pendingLocal, e.Candidates...)
			}
			return out
		}
		m.sendCandidates(l, e.Candidates, emit)
	case PeerChanged:
		m.peerChanged(e, emit)
	case TimerFired:
		m.timer(now, e.ID, emit)
	}
	m.checkIdle(now, emit)
	return out
}

func (m *Machine) setPhase(p Phase, emit func(...Effect)) {
	if m.phase != p {
		m.phase = p
		emit(PhaseChanged{Phase: p})
	}
}

func (m *Machine) ownContent(now time.Time) MemberContent {
	return MemberContent{Memberships: []Membership{NewOwnMembership(m.cfg.Room, m.cfg.Self.DeviceID, m.cfg.SessionID, now)}}
}

func (m *Machine) ring(now time.Time, emit func(...Effect)) {
	m.ringExpired, m.rung = false, true
	wasLive := m.liveOnly
	m.liveOnly = false
	if m.phase == PhaseIdle || m.phase == PhaseLiveView {
		m.setPhase(PhaseRinging, emit)
	}
	emit(StartTimer{ID: TimerID{Kind: TimerRing}, After: m.cfg.RingTimeout})
	switch {
	case m.joined && m.publishing:
		m.ringPending = true // sent once the membership is in (published)
	case m.joined:
		emit(SendNotification{Content: NewRing(m.membershipEv, now, m.cfg.RingTimeout)})
		if wasLive {
			// The live view connected only the devices allowed to watch;
			// the ring is for every member.
			m.acceptHeld(emit)
			m.connectAll(now, emit)
		}
	default:
		m.ringPending = true
		m.join(now, emit)
	}
}

// join publishes the own membership; calls wait for MembershipPublished.
func (m *Machine) join(now time.Time, emit func(...Effect)) {
	m.joined, m.publishing = true, true
	emit(PublishMembership{StateKey: OwnStateKey(m.cfg.Self.User), Content: m.ownContent(now)},
		StartTimer{ID: TimerID{Kind: TimerRefresh}, After: RefreshInterval})
}

// watch joins the call without a ring for a live view: a device allowed
// to watch joined while the intercom was out. The devices place their
// calls once they see the membership (the lower "user:device" calls), the
// intercom places the others. Nobody connected within the ring timeout →
// leave, as after a ring.
func (m *Machine) watch(now time.Time, emit func(...Effect)) {
	m.liveOnly, m.ringExpired = true, false
	m.setPhase(PhaseLiveView, emit)
	emit(StartTimer{ID: TimerID{Kind: TimerRing}, After: m.cfg.RingTimeout})
	m.join(now, emit)
}

// mayConnect reports whether the intercom connects to d now: any member
// after a ring, only users allowed to watch during a live view.
func (m *Machine) mayConnect(d Device) bool { return !m.liveOnly || m.cfg.LiveView[d.User] }

// acceptHeld answers the invites held during a live view.
func (m *Machine) acceptHeld(emit func(...Effect)) {
	for _, id := range slices.Sorted(maps.Keys(m.legs)) {
		if l := m.legs[id]; l.state == legHeld {
			l.state = legAccepting
			emit(AcceptOffer{CallID: id, SDP: l.offer},
				StartTimer{ID: TimerID{Kind: TimerConnect, Key: string(id)}, After: m.cfg.ConnectTimeout})
			l.offer = ""
		}
	}
}

// published: the membership is in the room. The ring follows it (MSC4075:
// the notification is sent after the own membership and relates to it),
// and only then are calls placed, so that peers know the intercom's
// session before its invites reach them.
func (m *Machine) published(now time.Time, e MembershipPublished, emit func(...Effect)) {
	if !m.joined {
		return
	}
	if e.Err == nil && e.EventID != "" {
		m.membershipEv = e.EventID
	}
	m.publishing = false
	if m.ringPending {
		m.ringPending = false
		emit(SendNotification{Content: NewRing(m.membershipEv, now, m.cfg.RingTimeout)})
	}
	if !m.liveOnly {
		m.acceptHeld(emit)
	}
	m.connectAll(now, emit)
}

func (m *Machine) leave(emit func(...Effect), reason string) {
	for _, id := range slices.Sorted(maps.Keys(m.legs)) {
		m.endLeg(m.legs[id], true, reason, emit)
	}
	clear(m.reorder)
	if m.joined {
		m.joined, m.ringPending, m.publishing = false, false, false
		emit(PublishMembership{StateKey: OwnStateKey(m.cfg.Self.User), Content: MemberContent{Memberships: []Membership{}}})
	}
	emit(StopTimer{ID: TimerID{Kind: TimerRing}}, StopTimer{ID: TimerID{Kind: TimerRefresh}})
	m.hadConnected, m.ringExpired, m.rewaiting, m.liveOnly, m.rung = false, false, false, false, false
	m.setPhase(PhaseIdle, emit)
}

// answeredElsewhere stops an open ring (AnsweredElsewhere). Devices
// connected now were connected before the ring (a live view): a device
// that connected during it would have closed the ring.
func (m *Machine) answeredElsewhere(emit func(...Effect)) {
	if !m.rung {
		return
	}
	m.rung = false
	watching := false
	for _, l := range m.legs {
		watching = watching || l.state == legConnected
	}
	if !watching {
		m.leave(emit, callengine.ReasonUserHangup)
		return
	}
	for _, id := range slices.Sorted(maps.Keys(m.legs)) {
		if l := m.legs[id]; l.state != legConnected {
			m.endLeg(l, true, callengine.ReasonUserHangup, emit)
		}
	}
	m.liveOnly, m.ringPending = true, false
	emit(StopTimer{ID: TimerID{Kind: TimerRing}})
}

// checkIdle leaves when the ring ran out and nobody is connected, or when
// the last device has gone after one connected. A device that is still a
// member but lost its call (its app restarted with a new session) gets the
// ring timeout to come back. A live view ends as soon as no device allowed
// to watch is a member any more.
func (m *Machine) checkIdle(now time.Time, emit func(...Effect)) {
	if m.phase == PhaseIdle || !m.joined {
		return
	}
	active := 0
	for _, l := range m.legs {
		if l.state == legConnected {
			return
		}
		if l.state != legHeld {
			active++
		}
	}
	devs := m.validDevices(now)
	if m.liveOnly && !slices.ContainsFunc(slices.Collect(maps.Keys(devs)), m.mayConnect) {
		m.leave(emit, callengine.ReasonUserHangup)
		return
	}
	if m.ringExpired {
		m.leave(emit, callengine.ReasonUserHangup)
		return
	}
	if !m.hadConnected || active > 0 {
		return
	}
	if len(devs) == 0 {
		m.leave(emit, callengine.ReasonUserHangup)
		return
	}
	if !m.rewaiting {
		m.rewaiting = true
		if m.liveOnly {
			m.setPhase(PhaseLiveView, emit)
		} else {
			m.setPhase(PhaseRinging, emit)
		}
		emit(StartTimer{ID: TimerID{Kind: TimerRing}, After: m.cfg.RingTimeout})
	}
}

// valid returns user's memberships of this call that count at now, in
// state key order, for at most Config.MaxDevicesPerUser devices: those in
// a call with the intercom first (a further device never cuts one off),
// then the others in state key order. The rest are treated as absent: not
// called, their to-device events ignored. It costs one pass over the
// user's keys (two if the user is in a call) and allocates only what it
// returns.
func (m *Machine) valid(now time.Time, user callengine.UserID) []Membership {
	u := m.members[user]
	if u == nil || m.left[user] {
		return nil
	}
	counts := func(mb Membership) bool {
		return mb.Application == ApplicationCall && mb.CallID == m.ConfID() && mb.Mesh() && !mb.Expired(now)
	}
	limit := m.cfg.maxDevicesPerUser()
	var admitted []string // device IDs, at most limit
	for _, l := range m.legs {
		if l.peer.User == user && !slices.Contains(admitted, l.peer.DeviceID) && len(admitted) < limit && u.has(l.peer.DeviceID, counts) {
			admitted = append(admitted, l.peer.DeviceID)
		}
	}
	var out []Membership
	for _, k := range u.keys {
		for _, mb := range u.lists[k] {
			if !counts(mb) {
				continue
			}
			if !slices.Contains(admitted, mb.DeviceID) {
				if len(admitted) >= limit {
					continue
				}
				admitted = append(admitted, mb.DeviceID)
			}
			out = append(out, mb)
		}
	}
	return out
}

// validDevices lists every member device of the call except the intercom.
func (m *Machine) validDevices(now time.Time) map[Device]Membership {
	out := map[Device]Membership{}
	for user := range m.members {
		for _, mb := range m.valid(now, user) {
			d := Device{User: user, DeviceID: mb.DeviceID}
			if d != m.cfg.Self {
				out[d] = mb
			}
		}
	}
	return out
}

// setMember records the memberships list of state key for user; an empty
// list removes the key.
func (m *Machine) setMember(key string, user callengine.UserID, list []Membership) {
	if owner, ok := m.keyOwner[key]; ok && (owner != user || len(list) == 0) {
		u := m.members[owner]
		u.remove(key)
		if len(u.keys) == 0 {
			delete(m.members, owner)
		}
		delete(m.keyOwner, key)
	}
	if len(list) == 0 {
		return
	}
	u := m.members[user]
	if u == nil {
		u = &userMembers{lists: map[string][]Membership{}}
		m.members[user] = u
	}
	u.set(key, list)
	m.keyOwner[key] = user
}

func (m *Machine) memberChanged(now time.Time, ev MemberEvent, emit func(...Effect)) {
	switch ev.Type {
	case TypeElementCallMember:
		ec, left, err := DecodeElementCallMember(ev)
		switch {
		case err != nil:
			emit(Ignored{Sender: ev.Sender, Type: ev.Type, Reason: err.Error()})
		case left:
			delete(m.elementCall, ev.StateKey)
		default:
			m.elementCall[ev.StateKey] = ec
		}
		return
	case TypeMember:
	default:
		return
	}
	list, err := DecodeMember(ev.StateKey, ev.Sender, ev.Content)
	if err != nil {
		emit(Ignored{Sender: ev.Sender, Type: ev.Type, Reason: err.Error()})
		return
	}
	m.setMember(ev.StateKey, ev.Sender, list)
	m.reconcile(now, emit)
}

// reconcile ends calls of devices that left, expired or changed session,
// plans the next expiry check, and connects new members.
func (m *Machine) reconcile(now time.Time, emit func(...Effect)) {
	devs := m.validDevices(now)
	fresh := false // a device allowed to watch joined the call
	for d, mb := range devs {
		if s, ok := m.seen[d]; (!ok || s != mb.MembershipID) && m.cfg.LiveView[d.User] {
			fresh = true
		}
	}
	clear(m.seen)
	for d, mb := range devs {
		m.seen[d] = mb.MembershipID
	}
	m.endStale(devs, emit)
	var next time.Time
	for _, mb := range devs {
		at := mb.Expires().Add(ExpiryGrace)
		if next.IsZero() || at.Before(next) {
			next = at
		}
	}
	if !next.Equal(m.expiryPlanned) {
		m.expiryPlanned = next
		if next.IsZero() {
			emit(StopTimer{ID: TimerID{Kind: TimerExpiry}})
		} else {
			emit(StartTimer{ID: TimerID{Kind: TimerExpiry}, After: max(next.Sub(now), 0) + time.Millisecond})
		}
	}
	switch {
	case !m.joined && fresh:
		m.watch(now, emit)
	case m.joined && !m.publishing:
		m.connectAll(now, emit)
	}
}

// endStale ends the calls of devices that are not in devs (valid
// devices): they left, their membership expired, or they changed session.
func (m *Machine) endStale(devs map[Device]Membership, emit func(...Effect)) {
	for _, id := range slices.Sorted(maps.Keys(m.legs)) {
		l := m.legs[id]
		mb, ok := devs[l.peer]
		if !ok || mb.MembershipID != l.session {
			// dart-sdk ends calls whose session no longer matches the
			// member's membershipID (README, §4.4).
			m.endLeg(l, true, callengine.ReasonUserHangup, emit)
		}
	}
}

// connectAll places a call to every member device the intercom should
// call and has no call with. It first ends the calls of devices no longer
// valid: a membership can expire between two expiry checks (TimerExpiry),
// and a call kept for it would still count against the limits while a
// further device of the same user was called (FuzzMachine found a user
// with three devices in calls against a limit of two).
func (m *Machine) connectAll(now time.Time, emit func(...Effect)) {
	devs := m.validDevices(now)
	m.endStale(devs, emit)
	busy := map[Device]bool{}
	for _, l := range m.legs {
		busy[l.peer] = true
	}
	for _, d := range slices.SortedFunc(maps.Keys(devs), func(a, b Device) int {
		return compareStrings(a.String(), b.String())
	}) {
		if busy[d] || !PlacesCall(m.cfg.Self, d) || !m.mayConnect(d) {
			continue
		}
		if len(m.legs) >= m.cfg.maxCalls() {
			return // the others are called when a call ends and a member changes
		}
		m.nextCall++
		id := callengine.CallID(fmt.Sprintf("%s.%d", m.cfg.SessionID, m.nextCall))
		m.legs[id] = &leg{id: id, peer: d, session: devs[d].MembershipID, outbound: true, family: m.cfg.Family, state: legCreating}
		emit(CreateOffer{CallID: id}, StartTimer{ID: TimerID{Kind: TimerConnect, Key: string(id)}, After: m.cfg.ConnectTimeout})
	}
}

func compareStrings(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

func (m *Machine) common(l *leg) callengine.Common {
	return callengine.Common{CallID: l.id, PartyID: callengine.PartyID(m.cfg.Self.DeviceID), Version: callengine.ProtocolVersion}
}

func (m *Machine) envelope(l *leg) Envelope {
	seq := l.seqOut
	l.seqOut++
	return Envelope{RoomID: m.cfg.Room, ConfID: m.ConfID(), DeviceID: m.cfg.Self.DeviceID,
		SenderSessionID: m.cfg.SessionID, DestSessionID: l.session, Seq: &seq}
}

func (m *Machine) send(l *leg, callType string, content any, emit func(...Effect)) {
	body, err := EncodeToDevice(m.envelope(l), content)
	if err != nil {
		emit(Ignored{Type: callType, Reason: "encode: " + err.Error()})
		return
	}
	emit(SendToDevice{To: l.peer, Type: ToDeviceType(l.family, callType), Content: body, CallID: l.id})
}

func (m *Machine) sendCandidates(l *leg, cands []callengine.Candidate, emit func(...Effect)) {
	for len(cands) > 0 {
		n := min(len(cands), callengine.MaxCandidates)
		m.send(l, callengine.TypeCandidates, &callengine.Candidates{Common: m.common(l), Candidates: cands[:n]}, emit)
		cands = cands[n:]
	}
}

func metadata(streamID string) callengine.StreamMetadata {
	if streamID == "" {
		return nil
	}
	return callengine.StreamMetadata{streamID: {Purpose: callengine.StreamPurposeUserMedia}}
}

// endLeg closes a call; with notify, the remote gets a hangup.
func (m *Machine) endLeg(l *leg, notify bool, reason string, emit func(...Effect)) {
	if notify && l.state == legHeld {
		// Never answered: the spec's reply to an unwanted invite.
		m.send(l, callengine.TypeReject, &callengine.Reject{Common: m.common(l)}, emit)
		notify = false
	}
	if notify && l.state != legCreating {
		m.send(l, callengine.TypeHangup, &callengine.Hangup{Common: m.common(l), Reason: reason}, emit)
	}
	delete(m.legs, l.id)
	// The call's reorder buffer goes with it (a reorder timer still
	// pending finds nothing and does nothing), so that calls a long
	// live view sees come and go do not pile up buffers until
	// maxReorderCalls refuses new ones.
	key := reorderKey(l.peer.User, l.id)
	delete(m.reorder, key)
	if len(m.ended) == maxEndedCalls {
		m.ended = slices.Delete(m.ended, 0, 1)
	}
	m.ended = append(m.ended, key)
	emit(ClosePeer{CallID: l.id}, StopTimer{ID: TimerID{Kind: TimerConnect, Key: string(l.id)}})
	if l.state == legConnected {
		emit(StopTimer{ID: TimerID{Kind: TimerDisconnected, Key: string(l.id)}},
			StopTimer{ID: TimerID{Kind: TimerRestart, Key: string(l.id)}},
			StopTimer{ID: TimerID{Kind: TimerRetry, Key: string(l.id)}})
	}
}

func (m *Machine) offerCreated(now time.Time, e OfferCreated, emit func(...Effect)) {
	l := m.legs[e.CallID]
	if l == nil || l.state != legCreating {
		if e.Err == nil {
			emit(ClosePeer{CallID: e.CallID})
		}
		return
	}
	if e.Err != nil {
		m.endLeg(l, false, "", emit)
		return
	}
	l.state, l.streamID = legInviting, e.StreamID
	md := metadata(e.StreamID)
	m.send(l, callengine.TypeInvite, &callengine.Invite{
		Common:           m.common(l),
		Lifetime:         m.cfg.InviteLifetime.Milliseconds(),
		Offer:            callengine.SessionDescription{Type: "offer", SDP: e.SDP},
		Metadata:         md,
		MetadataUnstable: md,
	}, emit)
	if len(l.pendingLocal) > 0 {
		m.sendCandidates(l, l.pendingLocal, emit)
		l.pendingLocal = nil
	}
}

func (m *Machine) offerAccepted(e OfferAccepted, emit func(...Effect)) {
	l := m.legs[e.CallID]
	if l == nil || l.state != legAccepting {
		if e.Err == nil {
			emit(ClosePeer{CallID: e.CallID})
		}
		return
	}
	if e.Err != nil {
		m.send(l, callengine.TypeReject, &callengine.Reject{Common: m.common(l)}, emit)
		m.endLeg(l, false, "", emit)
		return
	}
	l.state, l.streamID = legConnecting, e.StreamID
	md := metadata(e.StreamID)
	m.send(l, callengine.TypeAnswer, &callengine.Answer{
		Common:           m.common(l),
		Answer:           callengine.SessionDescription{Type: "answer", SDP: e.SDP},
		Metadata:         md,
		MetadataUnstable: md,
	}, emit)
	m.flushCandidates(l, emit)
}

func (m *Machine) flushCandidates(l *leg, emit func(...Effect)) {
	if len(l.pendingLocal) > 0 {
		m.sendCandidates(l, l.pendingLocal, emit)
		l.pendingLocal = nil
	}
	if len(l.pendingRemote) > 0 {
		emit(ApplyCandidates{CallID: l.id, Candidates: l.pendingRemote})
		l.pendingRemote = nil
	}
}

func (m *Machine) answerApplied(e AnswerApplied, emit func(...Effect)) {
	l := m.legs[e.CallID]
	if l == nil || l.state != legAnswering {
		return
	}
	if e.Err != nil {
		m.endLeg(l, true, callengine.ReasonUnknownError, emit)
		return
	}
	l.state = legConnecting
	m.send(l, callengine.TypeSelectAnswer, &callengine.SelectAnswer{Common: m.common(l), SelectedPartyID: l.party}, emit)
	m.flushCandidates(l, emit)
}

func (m *Machine) peerChanged(e PeerChanged, emit func(...Effect)) {
	l := m.legs[e.CallID]
	if l == nil {
		return
	}
	switch e.State {
	case callengine.PeerConnected:
		switch l.state {
		case legConnecting:
			l.state = legConnected
			m.hadConnected, m.rewaiting, m.rung = true, false, false
			emit(StopTimer{ID: TimerID{Kind: TimerConnect, Key: string(l.id)}})
			m.setPhase(PhaseInCall, emit)
		case legConnected:
			// Back, by itself or through a restart. An answer to a
			// restart still out is applied when it comes: the peer waits
			// for it.
			l.lost = false
			emit(StopTimer{ID: TimerID{Kind: TimerDisconnected, Key: string(l.id)}},
				StopTimer{ID: TimerID{Kind: TimerRestart, Key: string(l.id)}},
				StopTimer{ID: TimerID{Kind: TimerRetry, Key: string(l.id)}})
		}
	case callengine.PeerDisconnected:
		if l.state == legConnected && !l.lost {
			// Often transient (Wi-Fi roaming, a short blip): pion's
			// consent checks bring it back by themselves if the path
			// returns soon.
			emit(StartTimer{ID: TimerID{Kind: TimerDisconnected, Key: string(l.id)}, After: m.cfg.disconnectedGrace()})
		}
	case callengine.PeerFailed:
		switch {
		case l.state == legConnected && !l.lost:
			m.recover(l, emit)
		case l.state == legConnected && !l.restarting && l.outbound:
			// The restart's own checks failed: try with new candidates.
			m.restartICE(l, emit)
		case l.state != legConnected:
			m.endLeg(l, true, callengine.ReasonICEFailed, emit)
		}
	case callengine.PeerClosed:
		m.endLeg(l, true, callengine.ReasonUserHangup, emit)
	}
}

// recover starts the recovery of a connected call whose media was lost:
// it must be back within RestartTimeout or the call ends with ice_failed,
// as js-sdk ends a call disconnected too long (CallErrorCode.IceFailed).
// The side that placed the call restarts ICE (MSC3401 mesh calls follow
// the 1:1 rules: m.call.negotiate, the caller impolite); when the device
// placed it, the intercom waits for its restart offer.
func (m *Machine) recover(l *leg, emit func(...Effect)) {
	l.lost = true
	emit(StopTimer{ID: TimerID{Kind: TimerDisconnected, Key: string(l.id)}},
		StartTimer{ID: TimerID{Kind: TimerRestart, Key: string(l.id)}, After: m.cfg.restartTimeout()})
	if l.outbound {
		m.restartICE(l, emit)
	}
}

// restartICE asks the peer for an ICE restart offer unless one is already
// out, and plans the next attempt in case this one does not connect.
func (m *Machine) restartICE(l *leg, emit func(...Effect)) {
	if l.restarting {
		return
	}
	l.restarting, l.unanswered = true, 0
	emit(RestartICE{CallID: l.id}, StartTimer{ID: TimerID{Kind: TimerRetry, Key: string(l.id)}, After: m.cfg.restartRetry()})
}

// restartOffered sends the restart offer as an m.call.negotiate, with the
// stream metadata as invites carry it.
func (m *Machine) restartOffered(e RestartOffered, emit func(...Effect)) {
	l := m.legs[e.CallID]
	if l == nil || !l.restarting {
		return
	}
	if e.Err != nil {
		l.restarting = false // TimerRetry tries again
		emit(Ignored{Sender: l.peer.User, Type: callengine.TypeNegotiate, Reason: "ICE restart offer failed: " + e.Err.Error()})
		return
	}
	md := metadata(l.streamID)
	m.send(l, callengine.TypeNegotiate, &callengine.Negotiate{
		Common:           m.common(l),
		Lifetime:         m.cfg.InviteLifetime.Milliseconds(),
		Description:      callengine.SessionDescription{Type: "offer", SDP: e.SDP},
		Metadata:         md,
		MetadataUnstable: md,
	}, emit)
}

func (m *Machine) timer(now time.Time, id TimerID, emit func(...Effect)) {
	switch id.Kind {
	case TimerRing:
		m.ringExpired, m.rung = true, false
		if m.phase == PhaseInCall {
			m.ringExpired = false // someone is connected: stay
		}
		for _, cid := range slices.Sorted(maps.Keys(m.legs)) {
			if l := m.legs[cid]; m.phase != PhaseInCall && l.state != legConnected {
				m.endLeg(l, true, callengine.ReasonInviteTimeout, emit)
			}
		}
	case TimerRefresh:
		if m.joined {
			emit(PublishMembership{StateKey: OwnStateKey(m.cfg.Self.User), Content: m.ownContent(now)},
				StartTimer{ID: TimerID{Kind: TimerRefresh}, After: RefreshInterval})
		}
	case TimerExpiry:
		m.expiryPlanned = time.Time{}
		m.reconcile(now, emit)
	case TimerConnect:
		if l := m.legs[callengine.CallID(id.Key)]; l != nil && l.state != legConnected {
			reason := callengine.ReasonICETimeout
			if l.state == legInviting {
				reason = callengine.ReasonInviteTimeout
			}
			m.endLeg(l, true, reason, emit)
		}
	case TimerDisconnected:
		if l := m.legs[callengine.CallID(id.Key)]; l != nil && l.state == legConnected && !l.lost {
			m.recover(l, emit)
		}
	case TimerRetry:
		l := m.legs[callengine.CallID(id.Key)]
		switch {
		case l == nil || !l.lost:
		case l.restarting && l.unanswered == 0:
			// The answer to the last offer has not come (the homeserver
			// may be slow to deliver it); a second offer now would
			// collide with it. Wait another round.
			l.unanswered++
			emit(StartTimer{ID: id, After: m.cfg.restartRetry()})
		default:
			// Answered and still not connected, or unanswered for two
			// rounds (the offer or its answer was lost on the way): a
			// new offer, with new credentials, replaces it.
			l.restarting = false
			m.restartICE(l, emit)
		}
	case TimerRestart:
		if l := m.legs[callengine.CallID(id.Key)]; l != nil && l.lost {
			m.endLeg(l, true, callengine.ReasonICEFailed, emit)
		}
	case TimerReorder:
		r := m.reorder[id.Key]
		if r == nil || r.Deadline().IsZero() {
			return
		}
		if now.Before(r.Deadline()) {
			emit(StartTimer{ID: id, After: r.Deadline().Sub(now)})
			return
		}
		sender := callengine.UserID(senderOfKey(id.Key))
		var call callengine.CallID
		for _, td := range r.Flush() {
			m.dispatch(now, sender, td, emit)
			call = td.CallID()
		}
		m.dropIdleReorder(id.Key, call, r)
	}
}

func reorderKey(sender callengine.UserID, call callengine.CallID) string {
	return string(sender) + "\x00" + string(call)
}

func senderOfKey(k string) string {
	for i := 0; i < len(k); i++ {
		if k[i] == 0 {
			return k[:i]
		}
	}
	return k
}

// maxReorderCalls bounds the reorder buffers kept, one per sender and
// call; maxEndedCalls the ended calls whose late events are recognised.
const (
	maxReorderCalls = 256
	maxEndedCalls   = 64
)

// dropIdleReorder forgets key's reorder buffer r once it holds nothing
// and belongs to no call (events of an unknown or refused call): only a
// live call's buffer must remember which seq comes next.
func (m *Machine) dropIdleReorder(key string, call callengine.CallID, r *Reorder) {
	if call == "" || m.legs[call] != nil || !r.Deadline().IsZero() || m.reorder[key] != r {
		return
	}
	delete(m.reorder, key)
}

// toDevice validates a to-device call event against the group call:
// room_id and conf_id must be this call's, dest_session_id the
// intercom's session (dart-sdk voip.dart; js-sdk callEventHandler), and
// the sender a current member whose membershipID is the event's
// sender_session_id. Then it goes through the seq reordering.
func (m *Machine) toDevice(now time.Time, e ToDeviceReceived, emit func(...Effect)) {
	ms := m.valid(now, e.Sender)
	ignore := func(reason string) {
		emit(Ignored{Sender: e.Sender, Type: e.Type, Reason: reason, Quiet: len(ms) == 0})
	}
	td, err := DecodeToDevice(e.Type, e.Content)
	switch {
	case err != nil:
		ignore(err.Error())
		return
	case td.RoomID != m.cfg.Room:
		ignore("room_id is not the household room")
		return
	case td.ConfID != m.ConfID():
		ignore("conf_id is not the household call")
		return
	case td.DestSessionID != m.cfg.SessionID:
		ignore("dest_session_id is not this intercom's session")
		return
	case !m.joined:
		ignore("not in the group call")
		return
	}
	if len(ms) == 0 {
		ignore("sender is not a member of the group call")
		return
	}
	found := false
	for _, mb := range ms {
		if mb.MembershipID == td.SenderSessionID && (td.DeviceID == "" || td.DeviceID == mb.DeviceID) {
			found = true
			if td.DeviceID == "" {
				td.DeviceID = mb.DeviceID
			}
			break
		}
	}
	if !found {
		ignore("sender_session_id does not match the member's membershipID (stale session)")
		return
	}
	key := reorderKey(e.Sender, td.CallID())
	if slices.Contains(m.ended, key) {
		emit(Ignored{Sender: e.Sender, Type: e.Type, Reason: "call already ended", Quiet: true})
		return
	}
	r := m.reorder[key]
	if r == nil {
		if len(m.reorder) >= maxReorderCalls {
			ignore("too many calls")
			return
		}
		r = &Reorder{}
		m.reorder[key] = r
	}
	had := !r.Deadline().IsZero()
	for _, ready := range r.Push(now, td) {
		m.dispatch(now, e.Sender, ready, emit)
	}
	if !had && !r.Deadline().IsZero() {
		emit(StartTimer{ID: TimerID{Kind: TimerReorder, Key: key}, After: ReorderWait})
	}
	m.dropIdleReorder(key, td.CallID(), r)
}

// dispatch handles one validated to-device call event in seq order.
func (m *Machine) dispatch(now time.Time, sender callengine.UserID, td ToDevice, emit func(...Effect)) {
	from := Device{User: sender, DeviceID: td.DeviceID}
	callID := td.CallID()
	l := m.legs[callID]
	if l != nil && l.peer != from {
		emit(Ignored{Sender: sender, Type: td.CallType, Reason: "call belongs to another device"})
		return
	}
	switch c := td.Call.(type) {
	case *callengine.Invite:
		if l != nil {
			return // a repeated invite
		}
		// A new call from a device that already has one replaces it
		// (the device restarted its side).
		for _, id := range slices.Sorted(maps.Keys(m.legs)) {
			if old := m.legs[id]; old.peer == from {
				m.endLeg(old, true, callengine.ReasonUserHangup, emit)
			}
		}
		l = &leg{id: callID, peer: from, session: td.SenderSessionID, family: td.Family, state: legAccepting, party: c.PartyID}
		if len(m.legs) >= m.cfg.maxCalls() {
			// Refused at once (m.call.reject, the reply to an invite
			// never answered), so the device does not ring for a minute.
			emit(Ignored{Sender: sender, Type: td.CallType, Reason: "too many calls (household.max_calls); rejected"})
			m.send(l, callengine.TypeReject, &callengine.Reject{Common: m.common(l)}, emit)
			return
		}
		m.legs[callID] = l
		if !m.mayConnect(from) {
			// A live view is for users allowed to watch. The invite is
			// held, not refused: a ring within its lifetime answers it.
			l.state, l.offer = legHeld, c.Offer.SDP
			emit(Ignored{Sender: sender, Type: td.CallType, Reason: "not allowed to watch (live_view.allowed): invite held until a ring"},
				StartTimer{ID: TimerID{Kind: TimerConnect, Key: string(callID)}, After: m.cfg.InviteLifetime})
			return
		}
		emit(AcceptOffer{CallID: callID, SDP: c.Offer.SDP},
			StartTimer{ID: TimerID{Kind: TimerConnect, Key: string(callID)}, After: m.cfg.ConnectTimeout})
	case *callengine.Answer:
		if l == nil || l.state != legInviting {
			return
		}
		l.state, l.party, l.family = legAnswering, c.PartyID, td.Family
		emit(ApplyAnswer{CallID: callID, SDP: c.Answer.SDP})
	case *callengine.Candidates:
		if l == nil {
			return
		}
		if l.peerReady() {
			emit(ApplyCandidates{CallID: callID, Candidates: c.Candidates})
		} else if len(l.pendingRemote)+len(c.Candidates) <= maxPendingCandidates {
			l.pendingRemote = append(l.pendingRemote, c.Candidates...)
		}
	case *callengine.Hangup, *callengine.Reject:
		if l != nil {
			m.endLeg(l, false, "", emit)
		}
	case *callengine.Negotiate:
		if l == nil || !l.peerReady() {
			return
		}
		switch {
		case c.Description.Type == "answer" && l.restarting:
			l.restarting = false
			emit(ApplyRestartAnswer{CallID: callID, SDP: c.Description.SDP})
		case c.Description.Type == "answer":
			emit(Ignored{Sender: sender, Type: td.CallType, Reason: "negotiate answer without an offer of ours"})
		case l.restarting:
			// Perfect negotiation (matrix-voip.md §1.6): the intercom
			// only restarts calls it placed, where it is impolite, and
			// drops the colliding offer; the device, polite, takes ours.
			emit(Ignored{Sender: sender, Type: td.CallType, Reason: "colliding offer while our ICE restart is out"})
		default:
			emit(AnswerNegotiation{CallID: callID, SDP: c.Description.SDP})
		}
	case *callengine.SelectAnswer:
		// The intercom answered; the caller confirming it changes nothing.
	}
}

// MemberStatus describes one member device for the status document.
type MemberStatus struct {
	User     callengine.UserID `json:"user_id"`
	DeviceID string            `json:"device_id"`
	Expires  time.Time         `json:"expires"`
	Valid    bool              `json:"valid"`
	Call     string            `json:"call,omitempty"` // call state, "" if none
}

// CallStatus describes one mesh call.
type CallStatus struct {
	CallID   callengine.CallID `json:"call_id"`
	User     callengine.UserID `json:"user_id"`
	DeviceID string            `json:"device_id"`
	Outbound bool              `json:"outbound"`
	Family   string            `json:"family"`
	State    string            `json:"state"`
	// Recovering: connected, its media lost and being recovered (an ICE
	// restart, within Config.RestartTimeout).
	Recovering bool `json:"recovering,omitempty"`
}

// Status is the household call for the status document.
type Status struct {
	Room    callengine.RoomID `json:"room"`
	Session string            `json:"session_id"`
	Phase   Phase             `json:"phase"`
	Joined  bool              `json:"joined"`
	// LiveView: joined for a live view (no ring); only users allowed to
	// watch are connected.
	LiveView bool `json:"live_view"`
	// Rung: the bell rang here and no device has connected since (nor
	// did the ring run out or get answered elsewhere).
	Rung bool `json:"rung"`
	// Members is every member device by user, then state key; devices
	// beyond Config.MaxDevicesPerUser are listed as not valid.
	Members []MemberStatus `json:"members"`
	Calls   []CallStatus   `json:"calls"`
	// ElementCall lists Element Call (LiveKit) members: read, reported,
	// not connected (their media path is LiveKit).
	ElementCall []ElementCallMember `json:"element_call"`
}

// Status reports the machine at now.
func (m *Machine) Status(now time.Time) Status {
	st := Status{Room: m.cfg.Room, Session: m.cfg.SessionID, Phase: m.phase, Joined: m.joined, LiveView: m.liveOnly, Rung: m.rung,
		Members: []MemberStatus{}, Calls: []CallStatus{}, ElementCall: []ElementCallMember{}}
	valid := m.validDevices(now)
	calls := map[Device]string{}
	for _, id := range slices.Sorted(maps.Keys(m.legs)) {
		l := m.legs[id]
		calls[l.peer] = string(l.state)
		st.Calls = append(st.Calls, CallStatus{CallID: l.id, User: l.peer.User, DeviceID: l.peer.DeviceID,
			Outbound: l.outbound, Family: l.family.String(), State: string(l.state), Recovering: l.lost})
	}
	for _, user := range slices.Sorted(maps.Keys(m.members)) {
		u := m.members[user]
		for _, mb := range u.all() {
			d := Device{User: user, DeviceID: mb.DeviceID}
			if d == m.cfg.Self {
				continue
			}
			_, ok := valid[d]
			st.Members = append(st.Members, MemberStatus{User: user, DeviceID: mb.DeviceID,
				Expires: mb.Expires(), Valid: ok, Call: calls[d]})
		}
	}
	for _, k := range slices.Sorted(maps.Keys(m.elementCall)) {
		st.ElementCall = append(st.ElementCall, m.elementCall[k])
	}
	return st
}
