package callengine

import (
	"fmt"
	"strings"
	"time"
)

// Phase is the intercom's call phase as residents see it.
type Phase string

const (
	PhaseIdle    Phase = "idle"
	PhaseRinging Phase = "ringing"
	PhaseInCall  Phase = "in_call"
)

// LegState is the state of one outgoing call (one resident's room).
type LegState string

const (
	LegRinging   LegState = "ringing"   // invite sent, waiting for an answer
	LegAnswering LegState = "answering" // first answer received, being applied to the peer
	LegAccepting LegState = "accepting" // inbound call (live view) being answered by the intercom
	LegAnswered  LegState = "answered"  // answer applied and selected; ICE/DTLS connecting
	LegConnected LegState = "connected" // media flowing
	LegEnded     LegState = "ended"
)

// Timer kinds. A timer is identified by its kind and the call it belongs
// to (empty for the ring-wide timeout).
type TimerKind int

const (
	TimerRing         TimerKind = iota + 1 // ring timeout: unanswered legs get invite_timeout
	TimerFlush                             // send batched local candidates
	TimerConnect                           // answered but media never connected
	TimerClosed                            // media closed by the far end; waiting for its hangup
	TimerDisconnected                      // media disconnected; restart ICE if it does not come back
	TimerRestart                           // an ICE restart that must succeed in time
)

// TimerID names one timer of the machine.
type TimerID struct {
	Kind   TimerKind
	CallID CallID
}

// Config holds what the machine needs to know about the intercom itself.
type Config struct {
	// PartyID is the intercom's party_id (its device ID, as js-sdk does).
	PartyID PartyID
	// RingTimeout is how long residents ring; it is also the invite
	// lifetime.
	RingTimeout time.Duration
	// CandidateDelay batches trickled local candidates (js-sdk waits 2 s
	// as caller; the intercom's offer usually already holds its host
	// candidates, so only late ones are batched).
	CandidateDelay time.Duration
	// ConnectTimeout bounds the time from answer to connected media.
	ConnectTimeout time.Duration
	// ClosedGrace is how long a call whose media the resident's side closed
	// waits for the resident's m.call.hangup, which travels through the
	// homeserver and usually arrives a little after the connection closes.
	ClosedGrace time.Duration
	// LiveView lists who may call the intercom to watch the door; the
	// intercom answers their calls by itself. Anyone else is rejected.
	LiveView map[UserID]bool
	// DisconnectedGrace is how long media may stay disconnected before the
	// intercom restarts ICE (js-sdk waits 2 s too).
	DisconnectedGrace time.Duration
	// RestartTimeout bounds an ICE restart; then the call ends ice_failed.
	RestartTimeout time.Duration
	// RejectLimit bounds, per sender, the invites answered with nothing
	// but m.call.reject (a caller not allowed to watch, or busy); the
	// excess is ignored without a reply. Zero means DefaultRejectLimit.
	RejectLimit RateLimit
}

// DefaultConfig returns the timings used unless configured otherwise.
func DefaultConfig(party PartyID) Config {
	return Config{
		PartyID:        party,
		RingTimeout:    60 * time.Second,
		CandidateDelay: 100 * time.Millisecond,
		ConnectTimeout: 30 * time.Second,
		ClosedGrace:    3 * time.Second,

		DisconnectedGrace: 2 * time.Second,
		RestartTimeout:    15 * time.Second,
		RejectLimit:       DefaultRejectLimit,
	}
}

// --- Events: inputs to Machine.Step ---

// Event is an input to the machine.
type Event interface{ event() }

// LegSpec describes one outgoing call of a ring: its prepared offer and
// where it goes.
type LegSpec struct {
	CallID   CallID
	Room     RoomID
	Invitee  UserID
	OfferSDP string
	StreamID string
}

// RingRequested starts a ring: every leg is invited at once.
type RingRequested struct{ Legs []LegSpec }

// SignalReceived is a decoded call event from a room. Content is one of
// the pointer types returned by Decode.
type SignalReceived struct {
	Room    RoomID
	Sender  UserID
	Age     time.Duration
	Content any
}

// LocalCandidate is a candidate gathered by the local peer of a call.
type LocalCandidate struct {
	CallID    CallID
	Candidate Candidate
}

// PeerChanged reports a state change of a call's peer connection.
type PeerChanged struct {
	CallID CallID
	State  PeerState
}

// AnswerApplied reports the outcome of an ApplyAnswer effect.
type AnswerApplied struct {
	CallID CallID
	Err    error
}

// SendFailed reports that an event of a call could not be delivered.
type SendFailed struct {
	CallID CallID
	Type   string
	Err    error
}

// TimerFired reports that a timer started with StartTimer has elapsed.
type TimerFired struct{ Timer TimerID }

// HangupRequested ends every active call locally (API request, shutdown).
type HangupRequested struct{ Reason string }

// RingWithdrawn: the ring was answered on another path (household group
// call, MatrixRTC). Calls still ringing are hung up; a call already
// answered here stays, so two answers at the same moment never cut off
// the resident who answered here.
type RingWithdrawn struct{}

// CallAccepted reports the outcome of an AcceptCall effect: the answer to
// the resident's offer, or why there is none.
type CallAccepted struct {
	CallID    CallID
	AnswerSDP string
	StreamID  string
	Err       error
}

// OfferCreated reports the outcome of a RestartICE effect.
type OfferCreated struct {
	CallID CallID
	SDP    string
	Err    error
}

// NegotiationAnswered reports the outcome of an AnswerOffer effect.
type NegotiationAnswered struct {
	CallID CallID
	SDP    string
	Err    error
}

func (RingRequested) event()       {}
func (SignalReceived) event()      {}
func (LocalCandidate) event()      {}
func (PeerChanged) event()         {}
func (AnswerApplied) event()       {}
func (SendFailed) event()          {}
func (TimerFired) event()          {}
func (HangupRequested) event()     {}
func (RingWithdrawn) event()       {}
func (CallAccepted) event()        {}
func (OfferCreated) event()        {}
func (NegotiationAnswered) event() {}

// --- Effects: outputs of Machine.Step, executed by the Engine ---

// Effect is an output of the machine.
type Effect interface{ effect() }

// Send sends a call event into a room. Sends of one call must be delivered
// in order; sends of different calls may overlap.
type Send struct {
	CallID  CallID
	Room    RoomID
	Type    string
	Content any
}

// ApplyAnswer hands the remote answer to the call's peer; the engine
// reports the outcome with AnswerApplied.
type ApplyAnswer struct {
	CallID CallID
	SDP    string
}

// ApplyCandidates hands remote candidates to the call's peer.
type ApplyCandidates struct {
	CallID     CallID
	Candidates []Candidate
}

// AcceptCall creates a peer for an inbound call from the resident's offer;
// the engine reports the outcome with CallAccepted.
type AcceptCall struct {
	CallID   CallID
	OfferSDP string
}

// AnswerOffer hands a renegotiation offer (m.call.negotiate) to the call's
// peer; the engine reports the outcome with NegotiationAnswered.
type AnswerOffer struct {
	CallID CallID
	SDP    string
}

// RestartICE asks the call's peer for an ICE-restart offer; the engine
// reports it with OfferCreated.
type RestartICE struct{ CallID CallID }

// ApplyRenegotiatedAnswer hands the answer to our renegotiation offer to
// the call's peer.
type ApplyRenegotiatedAnswer struct {
	CallID CallID
	SDP    string
}

// ClosePeer releases the call's peer connection.
type ClosePeer struct{ CallID CallID }

// StartTimer (re)starts a timer.
type StartTimer struct {
	Timer TimerID
	After time.Duration
}

// StopTimer cancels a timer; stopping a timer that is not running is fine.
type StopTimer struct{ Timer TimerID }

// Ignored reports an input the machine dropped, with the reason, so the
// engine can log it. It changes nothing.
type Ignored struct {
	Room   RoomID
	Sender UserID
	CallID CallID
	Reason string
	// Quiet: logged at debug, not info. A flood the machine refuses to
	// answer must not become a flood in the log.
	Quiet bool
}

// CallEnded reports that one call of the ring has ended.
type CallEnded struct {
	CallID  CallID
	Invitee UserID
	Reason  string
	Remote  bool // ended by the resident rather than by the intercom
}

func (Send) effect()                    {}
func (ApplyAnswer) effect()             {}
func (ApplyCandidates) effect()         {}
func (ClosePeer) effect()               {}
func (AcceptCall) effect()              {}
func (AnswerOffer) effect()             {}
func (RestartICE) effect()              {}
func (ApplyRenegotiatedAnswer) effect() {}
func (StartTimer) effect()              {}
func (StopTimer) effect()               {}
func (Ignored) effect()                 {}
func (CallEnded) effect()               {}

// --- The machine ---

// leg is one outgoing call.
type leg struct {
	spec        LegSpec
	inbound     bool // a resident's call to the door (live view)
	restarting  bool // our ICE-restart offer is out, waiting for the answer
	state       LegState
	since       time.Time
	endReason   string
	remoteParty PartyID // the answering party once selected
	// offerCands holds the candidate lines already in the offer SDP, so
	// that gathered candidates are not sent twice.
	offerCands map[string]bool
	localQueue []Candidate // local candidates waiting for the flush timer
	flushArmed bool
	// remoteQueue holds candidates per remote party that arrived before an
	// answer was selected (matrix-voip.md §1.4).
	remoteQueue map[PartyID][]Candidate
}

// pendingAnswer is an answer waiting while an earlier one is applied.
type pendingAnswer struct {
	callID CallID
	party  PartyID
	sdp    string
}

// Machine is the call state of the intercom: at most one ring at a time,
// made of one outgoing call (leg) per resident. All residents ring at once;
// the first answer wins and every other leg is hung up.
//
// Machine performs no I/O and reads no clock: time comes in with each
// Step, and everything it wants done comes out as Effects. It is not safe
// for concurrent use; the Engine owns it.
type Machine struct {
	cfg     Config
	legs    map[CallID]*leg
	order   []CallID // legs in ring order, for stable status output
	winner  CallID   // the leg whose answer was taken, "" before
	pending []pendingAnswer
	since   time.Time // start of the current phase
	// rejects limits, per sender, the invites answered only with a reject.
	rejects senderBuckets
}

// NewMachine returns an idle machine.
func NewMachine(cfg Config) *Machine {
	return &Machine{cfg: cfg, legs: map[CallID]*leg{}, rejects: senderBuckets{limit: cfg.RejectLimit}}
}

// Phase returns the current phase.
func (m *Machine) Phase() Phase {
	if m.winner != "" {
		return PhaseInCall
	}
	for _, l := range m.legs {
		if l.state != LegEnded {
			return PhaseRinging
		}
	}
	return PhaseIdle
}

// CallStatus describes one call for the status API.
type CallStatus struct {
	CallID   CallID    `json:"call_id"`
	Room     RoomID    `json:"room"`
	Resident UserID    `json:"resident"`
	State    LegState  `json:"state"`
	Since    time.Time `json:"since"`
	Reason   string    `json:"reason,omitempty"`
	// Direction is "outbound" for a ring, "inbound" for live view.
	Direction string `json:"direction"`
}

// Status is a snapshot of the machine for the status API.
type Status struct {
	Phase Phase        `json:"state"`
	Since time.Time    `json:"since"`
	Calls []CallStatus `json:"calls"`
	// Ring is the last press's ring across every path, as the ring
	// coordinator (callengine/ring) merges it; nil in a single path's
	// own status.
	Ring *RingInfo `json:"ring,omitempty"`
}

// RingInfo tells how the last press's ring went on every path. It is kept
// until the next press, so a reader that missed intermediate statuses (a
// slow subscriber gets only the latest) still learns who answered.
type RingInfo struct {
	// N counts rings since start: it tells one press's ring from the next.
	N uint64 `json:"n"`
	// Paths are the paths that took the ring, in the order they were
	// rung: "classic" (1:1 calls), "household", "matrixrtc".
	Paths []string `json:"paths"`
	// AnsweredOn is the path that took the ring ("" until answered),
	// AnsweredBy the resident whose leg on it answered ("" if unknown),
	// AnsweredAt when the ring learned of the answer.
	AnsweredOn string    `json:"answered_on,omitempty"`
	AnsweredBy UserID    `json:"answered_by,omitempty"`
	AnsweredAt time.Time `json:"answered_at,omitzero"`
	// ConnectedAt is when a leg of the winning path first showed its
	// media connected (LegConnected).
	ConnectedAt time.Time `json:"connected_at,omitzero"`
}

// Status returns a snapshot of the current ring (ended legs included until
// the next ring starts, so a status reader can see how it ended).
func (m *Machine) Status() Status {
	s := Status{Phase: m.Phase(), Since: m.since, Calls: make([]CallStatus, 0, len(m.order))}
	for _, id := range m.order {
		l := m.legs[id]
		dir := "outbound"
		if l.inbound {
			dir = "inbound"
		}
		s.Calls = append(s.Calls, CallStatus{
			CallID: id, Room: l.spec.Room, Resident: l.spec.Invitee,
			State: l.state, Since: l.since, Reason: l.endReason, Direction: dir,
		})
	}
	return s
}

// Step advances the machine by one event and returns what must be done.
// It never blocks.
func (m *Machine) Step(now time.Time, ev Event) []Effect {
	before := m.Phase()
	var out []Effect
	switch e := ev.(type) {
	case RingRequested:
		out = m.ring(now, e)
	case SignalReceived:
		out = m.signal(now, e)
	case LocalCandidate:
		out = m.localCandidate(e)
	case PeerChanged:
		out = m.peerChanged(now, e)
	case AnswerApplied:
		out = m.answerApplied(now, e)
	case SendFailed:
		out = m.sendFailed(now, e)
	case TimerFired:
		out = m.timerFired(now, e)
	case HangupRequested:
		out = m.hangupAll(now, e.Reason)
	case RingWithdrawn:
		if m.Phase() == PhaseRinging {
			out = m.hangupAll(now, ReasonUserHangup)
		}
	case CallAccepted:
		out = m.callAccepted(now, e)
	case OfferCreated:
		out = m.offerCreated(e)
	case NegotiationAnswered:
		out = m.negotiationAnswered(e)
	}
	if m.Phase() != before {
		m.since = now
	}
	return out
}

func (m *Machine) common(id CallID) Common {
	return Common{CallID: id, PartyID: m.cfg.PartyID, Version: ProtocolVersion}
}

func (m *Machine) ring(now time.Time, e RingRequested) []Effect {
	if m.Phase() != PhaseIdle {
		// The engine checks this before preparing peers; a late duplicate
		// still must not start a second ring.
		var out []Effect
		for _, l := range e.Legs {
			out = append(out, ClosePeer{CallID: l.CallID}, Ignored{CallID: l.CallID, Reason: "ring already in progress"})
		}
		return out
	}
	m.legs = map[CallID]*leg{}
	m.order = nil
	m.winner = ""
	m.pending = nil
	lifetime := m.cfg.RingTimeout.Milliseconds()
	var out []Effect
	for _, s := range e.Legs {
		l := &leg{spec: s, state: LegRinging, since: now, offerCands: candidateLines(s.OfferSDP), remoteQueue: map[PartyID][]Candidate{}}
		m.legs[s.CallID] = l
		m.order = append(m.order, s.CallID)
		meta := StreamMetadata{s.StreamID: {Purpose: StreamPurposeUserMedia}}
		out = append(out, Send{CallID: s.CallID, Room: s.Room, Type: TypeInvite, Content: &Invite{
			Common:           m.common(s.CallID),
			Lifetime:         lifetime,
			Invitee:          s.Invitee,
			Offer:            SessionDescription{Type: "offer", SDP: s.OfferSDP},
			Capabilities:     &Capabilities{},
			Metadata:         meta,
			MetadataUnstable: meta,
		}})
	}
	out = append(out, StartTimer{Timer: TimerID{Kind: TimerRing}, After: m.cfg.RingTimeout})
	return out
}

// candidateLines collects the a=candidate lines of an SDP, normalised to
// the form carried in m.call.candidates ("candidate:…").
func candidateLines(sdp string) map[string]bool {
	set := map[string]bool{}
	for _, line := range strings.Split(sdp, "\n") {
		line = strings.TrimSpace(line)
		if c, ok := strings.CutPrefix(line, "a="); ok && strings.HasPrefix(c, "candidate:") {
			set[c] = true
		}
	}
	return set
}

func (m *Machine) localCandidate(e LocalCandidate) []Effect {
	l, ok := m.legs[e.CallID]
	if !ok || l.state == LegEnded {
		return nil
	}
	if !e.Candidate.IsEnd() && l.offerCands[strings.TrimPrefix(e.Candidate.Candidate, "a=")] {
		return nil // already in the offer
	}
	l.localQueue = append(l.localQueue, e.Candidate)
	if l.flushArmed {
		return nil
	}
	l.flushArmed = true
	return []Effect{StartTimer{Timer: TimerID{Kind: TimerFlush, CallID: e.CallID}, After: m.cfg.CandidateDelay}}
}

func (m *Machine) flush(id CallID) []Effect {
	l, ok := m.legs[id]
	if !ok {
		return nil
	}
	l.flushArmed = false
	if l.state == LegEnded || len(l.localQueue) == 0 {
		l.localQueue = nil
		return nil
	}
	cands := l.localQueue
	l.localQueue = nil
	return []Effect{Send{CallID: id, Room: l.spec.Room, Type: TypeCandidates, Content: &Candidates{Common: m.common(id), Candidates: cands}}}
}

func (m *Machine) signal(now time.Time, e SignalReceived) []Effect {
	var c *Common
	switch x := e.Content.(type) {
	case *Invite:
		return m.inboundInvite(now, e, x)
	case *Answer:
		c = &x.Common
	case *Candidates:
		c = &x.Common
	case *SelectAnswer:
		c = &x.Common
	case *Hangup:
		c = &x.Common
	case *Reject:
		c = &x.Common
	case *Negotiate:
		c = &x.Common
	default:
		return []Effect{Ignored{Room: e.Room, Sender: e.Sender, Reason: fmt.Sprintf("unhandled content %T", e.Content)}}
	}
	ignore := func(reason string) []Effect {
		return []Effect{Ignored{Room: e.Room, Sender: e.Sender, CallID: c.CallID, Reason: reason}}
	}
	l, ok := m.legs[c.CallID]
	if !ok {
		return ignore("unknown call")
	}
	if e.Room != l.spec.Room {
		return ignore("event for the call from another room")
	}
	if e.Sender != l.spec.Invitee {
		return ignore("sender is not the invited resident")
	}
	if l.state == LegEnded {
		return ignore("call already ended")
	}
	switch x := e.Content.(type) {
	case *Answer:
		if l.inbound {
			return ignore("answer on an inbound call")
		}
		return m.answer(now, l, x)
	case *Candidates:
		return m.remoteCandidates(l, x)
	case *Hangup:
		return m.remoteHangup(now, l, x)
	case *Reject:
		if l.inbound {
			return ignore("reject on an inbound call")
		}
		return m.remoteReject(now, l, x)
	case *SelectAnswer:
		if !l.inbound {
			return ignore("select_answer on an outbound call")
		}
		return m.selectAnswer(now, l, x)
	case *Negotiate:
		return m.negotiate(e, l, x)
	}
	return nil
}

func (m *Machine) inboundInvite(now time.Time, e SignalReceived, x *Invite) []Effect {
	ignore := func(reason string) []Effect {
		return []Effect{Ignored{Room: e.Room, Sender: e.Sender, CallID: x.CallID, Reason: reason}}
	}
	if _, ours := m.legs[x.CallID]; ours {
		return ignore("invite reuses a known call ID")
	}
	if x.Lifetime > 0 && e.Age > time.Duration(x.Lifetime)*time.Millisecond {
		return ignore("invite expired")
	}
	if x.Version.IsV0() {
		return ignore("version 0 calls are not supported")
	}
	// reject answers an invite with m.call.reject alone, within the
	// sender's RejectLimit: beyond it the invite is ignored without a
	// reply (it rings on the caller's side until its lifetime ends), so
	// a flood of invites earns no flood of sends.
	reject := func(reason string) []Effect {
		if !m.rejects.allow(now, e.Sender) {
			return []Effect{Ignored{Room: e.Room, Sender: e.Sender, CallID: x.CallID, Quiet: true,
				Reason: reason + "; over the sender's reject limit, not answered"}}
		}
		return append(ignore(reason+"; rejected"),
			Send{CallID: x.CallID, Room: e.Room, Type: TypeReject, Content: &Reject{Common: m.common(x.CallID)}})
	}
	if !m.cfg.LiveView[e.Sender] {
		// A prompt reject keeps the caller from ringing for a minute.
		return reject("caller may not watch the door")
	}
	var out []Effect
	switch m.Phase() {
	case PhaseInCall:
		// Busy: one call at a time, and the caller learns it at once. A
		// callee ends a call it never answered with m.call.reject
		// (MSC2746): js-sdk, as a caller still waiting for an answer,
		// ignores hangups from parties it has not chosen.
		return reject("busy")
	case PhaseRinging:
		// Glare (Matrix spec, VoIP: glare): the resident calls the door
		// while the door rings them. Of the two calls in that room the one
		// with the smaller call ID survives.
		for _, id := range m.order {
			l := m.legs[id]
			if l.inbound || l.state != LegRinging || l.spec.Room != e.Room || l.spec.Invitee != e.Sender {
				continue
			}
			if l.spec.CallID < x.CallID {
				// Rejected rather than hung up, for the reason above.
				return append(ignore("glare: our call is older and survives"),
					Send{CallID: x.CallID, Room: e.Room, Type: TypeReject, Content: &Reject{Common: m.common(x.CallID)}})
			}
			out = append(out, m.endLeg(now, l, "replaced", false, true)...)
		}
		// The resident's call wins the ring: nobody else needs to ring.
		for _, id := range m.order {
			if l := m.legs[id]; l.state != LegEnded {
				out = append(out, m.endLeg(now, l, ReasonUserHangup, false, true)...)
			}
		}
		out = append(out, StopTimer{Timer: TimerID{Kind: TimerRing}})
	default:
		m.legs = map[CallID]*leg{}
		m.order = nil
		m.pending = nil
	}
	l := &leg{
		spec:    LegSpec{CallID: x.CallID, Room: e.Room, Invitee: e.Sender, OfferSDP: x.Offer.SDP},
		inbound: true, state: LegAccepting, since: now, remoteParty: x.PartyID,
		offerCands: map[string]bool{}, remoteQueue: map[PartyID][]Candidate{},
	}
	m.legs[x.CallID] = l
	m.order = append(m.order, x.CallID)
	m.winner = x.CallID
	return append(out, AcceptCall{CallID: x.CallID, OfferSDP: x.Offer.SDP})
}

func (m *Machine) callAccepted(now time.Time, e CallAccepted) []Effect {
	l, ok := m.legs[e.CallID]
	if !ok || l.state != LegAccepting {
		return nil
	}
	if e.Err != nil {
		out := []Effect{Ignored{Room: l.spec.Room, Sender: l.spec.Invitee, CallID: e.CallID, Reason: "cannot answer: " + e.Err.Error()}}
		out = append(out, m.endLeg(now, l, ReasonMediaFailed, false, true)...)
		return append(out, m.maybeIdle()...)
	}
	l.state = LegAnswered
	l.since = now
	l.offerCands = candidateLines(e.AnswerSDP)
	l.spec.StreamID = e.StreamID
	meta := StreamMetadata{e.StreamID: {Purpose: StreamPurposeUserMedia}}
	out := []Effect{
		Send{CallID: e.CallID, Room: l.spec.Room, Type: TypeAnswer, Content: &Answer{
			Common:       m.common(e.CallID),
			Answer:       SessionDescription{Type: "answer", SDP: e.AnswerSDP},
			Capabilities: &Capabilities{},
			Metadata:     meta, MetadataUnstable: meta,
		}},
		StartTimer{Timer: TimerID{Kind: TimerConnect, CallID: e.CallID}, After: m.cfg.ConnectTimeout},
	}
	if q := l.remoteQueue[l.remoteParty]; len(q) > 0 {
		out = append(out, ApplyCandidates{CallID: e.CallID, Candidates: q})
	}
	l.remoteQueue = nil
	return out
}

// selectAnswer: the caller of an inbound call chose an answer; if it is
// not ours, another device answered and this one bows out silently
// (MSC2746; js-sdk and famedly's SDK do the same).
func (m *Machine) selectAnswer(now time.Time, l *leg, x *SelectAnswer) []Effect {
	if x.PartyID != l.remoteParty || x.SelectedPartyID == m.cfg.PartyID {
		return nil
	}
	return append(m.endLeg(now, l, "answered_elsewhere", true, false), m.maybeIdle()...)
}

// negotiate handles m.call.negotiate (Matrix spec, VoIP, v1): the resident
// renegotiating (hold, ICE restart, adding video) or answering our ICE
// restart.
func (m *Machine) negotiate(e SignalReceived, l *leg, x *Negotiate) []Effect {
	ignore := func(reason string) []Effect {
		return []Effect{Ignored{Room: e.Room, Sender: e.Sender, CallID: x.CallID, Reason: reason}}
	}
	if x.PartyID == m.cfg.PartyID {
		return nil
	}
	if l.state != LegAnswered && l.state != LegConnected {
		return ignore("negotiate before the call is up")
	}
	if x.PartyID != l.remoteParty {
		return ignore("negotiate from an unselected party")
	}
	if x.Lifetime > 0 && e.Age > time.Duration(x.Lifetime)*time.Millisecond {
		return ignore("negotiate expired")
	}
	switch x.Description.Type {
	case "answer":
		if !l.restarting {
			return ignore("negotiate answer without our offer")
		}
		l.restarting = false
		return []Effect{ApplyRenegotiatedAnswer{CallID: x.CallID, SDP: x.Description.SDP}}
	default: // "offer", checked by Decode
		if l.restarting && !l.inbound {
			// Perfect negotiation: the caller is impolite and drops a
			// colliding offer; the resident (polite) will take ours.
			return ignore("colliding offer while our ICE restart is out")
		}
		l.restarting = false
		return []Effect{AnswerOffer{CallID: x.CallID, SDP: x.Description.SDP}}
	}
}

func (m *Machine) negotiationAnswered(e NegotiationAnswered) []Effect {
	l, ok := m.legs[e.CallID]
	if !ok || l.state == LegEnded {
		return nil
	}
	if e.Err != nil {
		return []Effect{Ignored{Room: l.spec.Room, Sender: l.spec.Invitee, CallID: e.CallID, Reason: "renegotiation offer refused: " + e.Err.Error()}}
	}
	return []Effect{Send{CallID: e.CallID, Room: l.spec.Room, Type: TypeNegotiate, Content: m.negotiateContent(l, "answer", e.SDP)}}
}

func (m *Machine) offerCreated(e OfferCreated) []Effect {
	l, ok := m.legs[e.CallID]
	if !ok || l.state == LegEnded || !l.restarting {
		return nil
	}
	if e.Err != nil {
		l.restarting = false
		return []Effect{Ignored{Room: l.spec.Room, CallID: e.CallID, Reason: "ICE restart offer failed: " + e.Err.Error()}}
	}
	return []Effect{Send{CallID: e.CallID, Room: l.spec.Room, Type: TypeNegotiate, Content: m.negotiateContent(l, "offer", e.SDP)}}
}

// negotiateContent builds an m.call.negotiate with the stream metadata
// under both keys, as invites and answers carry it (js-sdk warns about
// negotiates without it; famedly's SDK reads only the unstable key).
func (m *Machine) negotiateContent(l *leg, typ, sdp string) *Negotiate {
	n := &Negotiate{
		Common:      m.common(l.spec.CallID),
		Lifetime:    negotiateLifetime.Milliseconds(),
		Description: SessionDescription{Type: typ, SDP: sdp},
	}
	if l.spec.StreamID != "" {
		meta := StreamMetadata{l.spec.StreamID: {Purpose: StreamPurposeUserMedia}}
		n.Metadata, n.MetadataUnstable = meta, meta
	}
	return n
}

// negotiateLifetime is the lifetime the intercom puts on its negotiate
// events (famedly's SDK uses 10 s, js-sdk 60 s).
const negotiateLifetime = 30 * time.Second

// restartICE starts an ICE restart unless one is already out.
func (m *Machine) restartICE(l *leg) []Effect {
	id := l.spec.CallID
	if l.restarting {
		return nil
	}
	l.restarting = true
	return []Effect{
		RestartICE{CallID: id},
		StartTimer{Timer: TimerID{Kind: TimerRestart, CallID: id}, After: m.cfg.RestartTimeout},
	}
}

func (m *Machine) answer(now time.Time, l *leg, x *Answer) []Effect {
	id := l.spec.CallID
	if x.PartyID == m.cfg.PartyID {
		return []Effect{Ignored{Room: l.spec.Room, CallID: id, Reason: "own answer echoed"}}
	}
	if m.winner != "" || l.state != LegRinging {
		return []Effect{Ignored{Room: l.spec.Room, Sender: l.spec.Invitee, CallID: id, Reason: "late answer: call already answered"}}
	}
	for _, other := range m.legs {
		if other.state == LegAnswering {
			// Another answer is being applied; keep this one in case that
			// one fails.
			m.pending = append(m.pending, pendingAnswer{callID: id, party: x.PartyID, sdp: x.Answer.SDP})
			return nil
		}
	}
	return m.takeAnswer(now, l, x.PartyID, x.Answer.SDP)
}

func (m *Machine) takeAnswer(now time.Time, l *leg, party PartyID, sdp string) []Effect {
	l.state = LegAnswering
	l.since = now
	l.remoteParty = party
	return []Effect{ApplyAnswer{CallID: l.spec.CallID, SDP: sdp}}
}

func (m *Machine) answerApplied(now time.Time, e AnswerApplied) []Effect {
	l, ok := m.legs[e.CallID]
	if !ok || l.state != LegAnswering {
		return nil
	}
	if e.Err != nil {
		// The answer could not be used (broken or hostile SDP from one of
		// the resident's devices). Nothing was selected, so the call keeps
		// ringing: another device of the resident, or another resident,
		// can still answer. A hangup now would stop all of them.
		l.state = LegRinging
		l.since = now
		l.remoteParty = ""
		out := []Effect{Ignored{Room: l.spec.Room, Sender: l.spec.Invitee, CallID: l.spec.CallID, Reason: "answer refused by WebRTC: " + e.Err.Error()}}
		return append(out, m.nextPending(now)...)
	}
	id := l.spec.CallID
	m.winner = id
	m.pending = nil
	l.state = LegAnswered
	l.since = now
	out := []Effect{
		// Matrix spec, VoIP: the caller selects the answer it took, which
		// also stops the resident's other devices from ringing.
		Send{CallID: id, Room: l.spec.Room, Type: TypeSelectAnswer, Content: &SelectAnswer{Common: m.common(id), SelectedPartyID: l.remoteParty}},
		StopTimer{Timer: TimerID{Kind: TimerRing}},
		StartTimer{Timer: TimerID{Kind: TimerConnect, CallID: id}, After: m.cfg.ConnectTimeout},
	}
	if q := l.remoteQueue[l.remoteParty]; len(q) > 0 {
		out = append(out, ApplyCandidates{CallID: id, Candidates: q})
	}
	l.remoteQueue = nil
	// First answer wins: everyone else stops ringing.
	for _, oid := range m.order {
		if o := m.legs[oid]; oid != id && o.state != LegEnded {
			out = append(out, m.endLeg(now, o, ReasonUserHangup, false, true)...)
		}
	}
	return out
}

func (m *Machine) nextPending(now time.Time) []Effect {
	for len(m.pending) > 0 {
		p := m.pending[0]
		m.pending = m.pending[1:]
		if l, ok := m.legs[p.callID]; ok && l.state == LegRinging {
			return m.takeAnswer(now, l, p.party, p.sdp)
		}
	}
	return m.maybeIdle()
}

func (m *Machine) remoteCandidates(l *leg, x *Candidates) []Effect {
	if x.PartyID == m.cfg.PartyID {
		return nil // our own, echoed by sync
	}
	switch l.state {
	case LegRinging, LegAnswering, LegAccepting:
		// Before an answer is selected (or, for an inbound call, before our
		// peer exists), keep candidates per party: only the selected
		// party's are used (matrix-voip.md §1.4).
		if len(l.remoteQueue[x.PartyID]) < 4*MaxCandidates {
			l.remoteQueue[x.PartyID] = append(l.remoteQueue[x.PartyID], x.Candidates...)
		}
		return nil
	}
	if x.PartyID != l.remoteParty {
		return []Effect{Ignored{Room: l.spec.Room, Sender: l.spec.Invitee, CallID: l.spec.CallID, Reason: "candidates from an unselected party"}}
	}
	return []Effect{ApplyCandidates{CallID: l.spec.CallID, Candidates: x.Candidates}}
}

func (m *Machine) remoteHangup(now time.Time, l *leg, x *Hangup) []Effect {
	if x.PartyID == m.cfg.PartyID {
		return nil
	}
	reason := x.Reason
	if reason == "" {
		reason = ReasonUserHangup
	}
	switch l.state {
	case LegRinging:
		// A callee hanging up before answering declines the call (older
		// clients, and famedly's SDK after its own ring timeout).
		return append(m.endLeg(now, l, reason, true, false), m.maybeIdle()...)
	case LegAnswering:
		if x.PartyID != l.remoteParty {
			return nil
		}
		out := m.endLeg(now, l, reason, true, false)
		return append(out, m.nextPending(now)...)
	case LegAccepting:
		if x.PartyID != l.remoteParty {
			return nil
		}
		return append(m.endLeg(now, l, reason, true, false), m.maybeIdle()...)
	default:
		if x.PartyID != l.remoteParty {
			// Past ringing, only the selected party may end the call
			// (js-sdk and Element Android behave the same).
			return []Effect{Ignored{Room: l.spec.Room, Sender: l.spec.Invitee, CallID: l.spec.CallID, Reason: "hangup from an unselected party"}}
		}
		return append(m.endLeg(now, l, reason, true, false), m.maybeIdle()...)
	}
}

func (m *Machine) remoteReject(now time.Time, l *leg, x *Reject) []Effect {
	if x.PartyID == m.cfg.PartyID {
		return nil
	}
	if l.state != LegRinging {
		// MSC2746: a caller that has already accepted an answer ignores
		// rejects.
		return []Effect{Ignored{Room: l.spec.Room, Sender: l.spec.Invitee, CallID: l.spec.CallID, Reason: "reject after answer"}}
	}
	id := l.spec.CallID
	// The spec asks the caller to select a reject like an answer; it stops
	// the resident's other devices and is harmless to clients that don't
	// expect it.
	out := []Effect{Send{CallID: id, Room: l.spec.Room, Type: TypeSelectAnswer, Content: &SelectAnswer{Common: m.common(id), SelectedPartyID: x.PartyID}}}
	out = append(out, m.endLeg(now, l, "rejected", true, false)...)
	return append(out, m.maybeIdle()...)
}

func (m *Machine) peerChanged(now time.Time, e PeerChanged) []Effect {
	l, ok := m.legs[e.CallID]
	if !ok || l.state == LegEnded {
		return nil
	}
	switch e.State {
	case PeerConnected:
		out := []Effect{
			StopTimer{Timer: TimerID{Kind: TimerDisconnected, CallID: e.CallID}},
			StopTimer{Timer: TimerID{Kind: TimerRestart, CallID: e.CallID}},
		}
		if l.state == LegAnswered {
			l.state = LegConnected
			l.since = now
			out = append(out, StopTimer{Timer: TimerID{Kind: TimerConnect, CallID: e.CallID}})
		}
		return out
	case PeerDisconnected:
		if l.state == LegConnected {
			// Often transient (Wi-Fi roaming); restart ICE if it lasts.
			return []Effect{StartTimer{Timer: TimerID{Kind: TimerDisconnected, CallID: e.CallID}, After: m.cfg.DisconnectedGrace}}
		}
	case PeerFailed:
		switch l.state {
		case LegConnected:
			// ICE restart through m.call.negotiate; ice_failed if it does
			// not recover within RestartTimeout.
			return m.restartICE(l)
		case LegAnswered:
			return append(m.endLeg(now, l, ReasonICEFailed, false, true), m.maybeIdle()...)
		}
	case PeerClosed:
		if l.state == LegAnswered || l.state == LegConnected {
			// Usually the resident hung up and the hangup event is on its
			// way; give it a moment so the call ends with their reason.
			return []Effect{StartTimer{Timer: TimerID{Kind: TimerClosed, CallID: e.CallID}, After: m.cfg.ClosedGrace}}
		}
	}
	return nil
}

func (m *Machine) sendFailed(now time.Time, e SendFailed) []Effect {
	l, ok := m.legs[e.CallID]
	if !ok || l.state == LegEnded {
		return nil
	}
	if e.Type == TypeInvite || e.Type == TypeSelectAnswer {
		// Without the invite the resident never rings; without
		// select_answer the resident's client never connects. Either way
		// the call cannot go on; a hangup may still get through.
		wasAnswering := l.state == LegAnswering
		out := m.endLeg(now, l, ReasonUnknownError, false, true)
		if wasAnswering {
			return append(out, m.nextPending(now)...)
		}
		return append(out, m.maybeIdle()...)
	}
	return nil
}

func (m *Machine) timerFired(now time.Time, e TimerFired) []Effect {
	switch e.Timer.Kind {
	case TimerFlush:
		return m.flush(e.Timer.CallID)
	case TimerRing:
		var out []Effect
		for _, id := range m.order {
			if l := m.legs[id]; l.state == LegRinging {
				out = append(out, m.endLeg(now, l, ReasonInviteTimeout, false, true)...)
			}
		}
		return append(out, m.maybeIdle()...)
	case TimerConnect:
		l, ok := m.legs[e.Timer.CallID]
		if ok && l.state == LegAnswered {
			return append(m.endLeg(now, l, ReasonICETimeout, false, true), m.maybeIdle()...)
		}
	case TimerClosed:
		l, ok := m.legs[e.Timer.CallID]
		if ok && (l.state == LegAnswered || l.state == LegConnected) {
			return append(m.endLeg(now, l, ReasonUnknownError, false, true), m.maybeIdle()...)
		}
	case TimerDisconnected:
		if l, ok := m.legs[e.Timer.CallID]; ok && l.state == LegConnected {
			return m.restartICE(l)
		}
	case TimerRestart:
		if l, ok := m.legs[e.Timer.CallID]; ok && l.state == LegConnected {
			return append(m.endLeg(now, l, ReasonICEFailed, false, true), m.maybeIdle()...)
		}
	}
	return nil
}

func (m *Machine) hangupAll(now time.Time, reason string) []Effect {
	if reason == "" {
		reason = ReasonUserHangup
	}
	var out []Effect
	for _, id := range m.order {
		if l := m.legs[id]; l.state != LegEnded {
			out = append(out, m.endLeg(now, l, reason, false, true)...)
		}
	}
	m.pending = nil
	return append(out, m.maybeIdle()...)
}

// endLeg ends one call: optionally tells the resident, always releases the
// peer and the call's timers.
func (m *Machine) endLeg(now time.Time, l *leg, reason string, remote, sendHangup bool) []Effect {
	id := l.spec.CallID
	l.state = LegEnded
	l.since = now
	l.endReason = reason
	l.localQueue = nil
	l.remoteQueue = nil
	var out []Effect
	if sendHangup {
		out = append(out, Send{CallID: id, Room: l.spec.Room, Type: TypeHangup, Content: &Hangup{Common: m.common(id), Reason: reason}})
	}
	out = append(out,
		ClosePeer{CallID: id},
		StopTimer{Timer: TimerID{Kind: TimerFlush, CallID: id}},
		StopTimer{Timer: TimerID{Kind: TimerConnect, CallID: id}},
		StopTimer{Timer: TimerID{Kind: TimerClosed, CallID: id}},
		StopTimer{Timer: TimerID{Kind: TimerDisconnected, CallID: id}},
		StopTimer{Timer: TimerID{Kind: TimerRestart, CallID: id}},
		CallEnded{CallID: id, Invitee: l.spec.Invitee, Reason: reason, Remote: remote},
	)
	return out
}

// maybeIdle stops the ring timer once no leg is left ringing or in call.
func (m *Machine) maybeIdle() []Effect {
	if m.winner != "" && m.legs[m.winner].state == LegEnded {
		m.winner = ""
	}
	for _, l := range m.legs {
		if l.state != LegEnded {
			return nil
		}
	}
	return []Effect{StopTimer{Timer: TimerID{Kind: TimerRing}}}
}
