package device

import (
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/doorbell/intercom/callengine"
	"github.com/doorbell/intercom/gpio"
)

// DoorConfig is who may open the door, how, and when.
type DoorConfig struct {
	// Commands are the message bodies that open the door, compared after
	// trimming space and case-insensitively (default "!open").
	Commands []string
	// ReactionKey is the annotation key that opens the door when a resident
	// reacts with it to a ring notice (default 🔑). Emoji variation
	// selectors are ignored on both sides.
	ReactionKey string
	// Pulse is how long the strike is energised (default 3 s, at most
	// gpio.MaxPulse whatever is configured). It is also the rate limit: at
	// most one pulse per Pulse.
	Pulse time.Duration
	// Authorized are the users whose commands open the door.
	Authorized []callengine.UserID
	// Window is how long after a ring started commands are obeyed
	// (default DefaultWindow); while a call is connected (in_call) they
	// always are. A reaction counts only on the ring notice of a ring
	// inside the window, or of the ring a connected call answered.
	// Outside, a command is refused however fresh its timestamp: the
	// homeserver stamps origin_server_ts when the event reaches it, so an
	// "!open" queued on a phone that was offline for hours arrives
	// looking fresh (issue 19, finding 1).
	Window time.Duration
	// OnlyDuringCall closes the ring window: commands are obeyed only
	// while a call is connected.
	OnlyDuringCall bool
	// ReplyUnauthorized answers a refused sender with a short notice (at
	// most one per sender and replyInterval).
	ReplyUnauthorized bool
	// MaxAge refuses commands older than this, whenever the intercom
	// started: a phone that was offline for an hour must not open the door
	// when it reconnects (default 60 s).
	MaxAge time.Duration
	// RequireCrossSigned obeys only commands that arrived encrypted from
	// a device its user cross-signed (callengine.TrustCrossSigned). Off,
	// an encrypted command needs only a device of the sender's own
	// (callengine.TrustDevice). Either way a plaintext command in an
	// encrypted room, and an encrypted one that could not be tied to a
	// device of the sender, are refused.
	RequireCrossSigned bool
}

// DefaultPulse, DefaultCommand, DefaultReactionKey, DefaultMaxAge and
// DefaultWindow are the DoorConfig defaults.
const (
	DefaultPulse       = 3 * time.Second
	DefaultCommand     = "!open"
	DefaultReactionKey = "🔑"
	DefaultMaxAge      = 60 * time.Second
	// DefaultWindow gives a resident who missed the ring (ring.timeout is
	// at most 90 s) time to look at the notice and answer with a command.
	DefaultWindow = 3 * time.Minute
)

const (
	// maxAhead is how far ahead of the homeserver's clock a timestamp may
	// be and still be believed: a little for clocks that disagree between
	// federated servers, no more.
	maxAhead = time.Minute
	// maxSeen bounds the event IDs the policy remembers. When it is full,
	// the oldest is forgotten and its timestamp becomes the floor: nothing
	// at or before it is obeyed again.
	maxSeen = 1024
	// maxNotices bounds the ring notices a reaction may target.
	maxNotices = 256
	// replyInterval is the least time between two refusal replies to one
	// sender, so the intercom never becomes a chat partner in a loop.
	replyInterval = time.Minute
	// ringAnswer bounds how long after a ring a call that connects still
	// answers it: ring.timeout is at most 90 s, plus the time to connect.
	// A call that connects later (a live view hours after the ring) keeps
	// that ring's notice out of reach.
	ringAnswer = 2 * time.Minute
)

func (c DoorConfig) withDefaults() DoorConfig {
	if len(c.Commands) == 0 {
		c.Commands = []string{DefaultCommand}
	}
	if c.ReactionKey == "" {
		c.ReactionKey = DefaultReactionKey
	}
	if c.Pulse <= 0 {
		c.Pulse = DefaultPulse
	}
	c.Pulse = min(c.Pulse, gpio.MaxPulse)
	if c.MaxAge <= 0 {
		c.MaxAge = DefaultMaxAge
	}
	if c.Window <= 0 {
		c.Window = DefaultWindow
	}
	return c
}

// DoorRequest is a room event that may be a door command.
type DoorRequest struct {
	EventID string
	Room    callengine.RoomID
	Sender  callengine.UserID
	// Text is the body of a text message; empty for a reaction.
	Text string
	// Reaction is set for an m.reaction: Key is its annotation key, Target
	// the event it annotates.
	Reaction    bool
	Key, Target string
	// Timestamp is the event's origin_server_ts (the homeserver's clock);
	// Age its unsigned.age when delivered (0: not given; negative: the
	// homeserver said so, which is suspicious).
	Timestamp time.Time
	Age       time.Duration
	// ServerNow is the homeserver's clock when the request reached the
	// sync (from the Date of the /sync response that carried it); zero if
	// unknown. The Door hands it to DoorPolicy.ServerTime.
	ServerNow time.Time
	// Seal is what end-to-end encryption says of the event.
	Seal callengine.Seal
}

// Verdict is what the policy made of a request.
type Verdict string

const (
	VerdictOpen          Verdict = "open"
	VerdictNotCommand    Verdict = "not_command"    // not a door command at all
	VerdictUnknownTarget Verdict = "unknown_target" // the key, but not on a ring notice of this run
	VerdictDuplicate     Verdict = "duplicate"      // this event ID was handled before
	VerdictStale         Verdict = "stale"          // older than the intercom's start or MaxAge
	VerdictFuture        Verdict = "future"         // dated more than maxAhead ahead of the homeserver's clock
	VerdictUnauthorized  Verdict = "unauthorized"
	VerdictOutsideWindow Verdict = "outside_window" // no call and no ring within Window
	VerdictRateLimited   Verdict = "rate_limited"   // the door was opened less than Pulse ago
	VerdictUntrusted     Verdict = "untrusted"      // not what the sender's own device said (encryption), see DoorConfig.RequireCrossSigned
)

// Decision is the policy's answer to one request.
type Decision struct {
	Verdict Verdict
	Why     string        // detail for the log
	Pulse   time.Duration // > 0 only for VerdictOpen
	Reply   string        // notice to send to the sender's room, "" for none
	// Changed says the policy's memory changed and should be saved.
	Changed bool
}

// DoorMemory is what the policy keeps across restarts (door.json in the
// state directory).
type DoorMemory struct {
	// NotBefore: commands from before it are never obeyed. It is the
	// homeserver's clock, as the sync showed it, when the memory was last
	// taken (never the board's own, which may be years off: issue 19,
	// finding 3). A value more than maxAhead ahead of the homeserver's
	// clock is dropped as the mistake it must be.
	NotBefore time.Time `json:"not_before"`
	// Floor: every forgotten event ID had a timestamp at or before it.
	Floor time.Time  `json:"floor"`
	Seen  []SeenItem `json:"seen"`
}

// SeenItem is one remembered event ID with its origin_server_ts.
type SeenItem struct {
	ID string    `json:"id"`
	TS time.Time `json:"ts"`
}

// DoorPolicy decides on door commands. It is pure: no I/O, no clock reads,
// no goroutines; time, and the homeserver's clock as the sync showed it
// (ServerTime), come in as arguments. It is not safe for concurrent use
// (the Door's goroutine owns it).
//
// The rules, in order (shared/DESIGN.md "Safety of the door"; issues 4
// and 19):
//  1. only configured command texts, or the configured key on a ring
//     notice of this run, are commands;
//  2. each event ID is acted on at most once, across restarts;
//  3. only authorised senders, judged before anything is remembered:
//     only their events enter the memory (issue 19, finding 2);
//  4. commands from before the intercom started are never obeyed: by
//     unsigned.age against the time since start, which needs no clock,
//     and by origin_server_ts against the homeserver's clock (the start,
//     and the previous run's not_before, in that clock), never the
//     board's; without a usable age, not before that clock is known; nor
//     are commands older than MaxAge, or dated more than maxAhead ahead of
//     the homeserver's clock (issue 19, findings 2 and 3);
//  5. only during a call or within Window after a ring (a reaction: on
//     the notice of a ring inside the window, or of the ring the call
//     answered);
//  6. at most one pulse per Pulse.
type DoorPolicy struct {
	cfg        DoorConfig
	commands   []string
	key        string
	authorized map[callengine.UserID]bool

	start time.Time // this run's start, with its monotonic reading if any
	// srvAt and srv anchor the homeserver's clock: it read srv at local
	// time srvAt (ServerTime). Zero until a sync showed it: the clock is
	// not trusted yet.
	srvAt, srv time.Time
	notBefore  time.Time // from the memory, homeserver time
	floor      time.Time
	seen       map[string]time.Time // authorised senders' events handled
	order      []string             // seen IDs, oldest first
	// strangers are the IDs of events refused as unauthorised, in RAM
	// only (refuseStranger).
	strangers   map[string]struct{}
	strangerIDs []string
	notices     map[string]time.Time // ring notice → start of its ring
	noticeIDs   []string

	inCall    bool
	callSince time.Time // when inCall last turned true
	lastRing  time.Time
	lastPulse time.Time
	replied   map[callengine.UserID]time.Time
}

// NewDoorPolicy returns the policy of a run that started at start,
// remembering mem from earlier runs.
func NewDoorPolicy(cfg DoorConfig, start time.Time, mem DoorMemory) *DoorPolicy {
	p := &DoorPolicy{
		start:     start,
		notBefore: mem.NotBefore,
		floor:     mem.Floor,
		seen:      map[string]time.Time{},
		strangers: map[string]struct{}{},
		notices:   map[string]time.Time{},
		replied:   map[callengine.UserID]time.Time{},
	}
	p.Reconfigure(cfg)
	for _, s := range mem.Seen {
		if s.ID != "" {
			p.remember(s.ID, s.TS)
		}
	}
	return p
}

// Reconfigure replaces the configuration (a reload: new authorised users,
// a new pulse length) and keeps everything the policy remembers: the event
// IDs already acted on, the "not before" time, this run's ring notices, the
// call window and the last pulse. So a reload can neither make a command
// already handled count again nor open the rate limit early: the limit is
// the new pulse, counted from the last pulse.
func (p *DoorPolicy) Reconfigure(cfg DoorConfig) {
	cfg = cfg.withDefaults()
	p.cfg = cfg
	p.key = normalizeKey(cfg.ReactionKey)
	p.commands = make([]string, 0, len(cfg.Commands))
	for _, c := range cfg.Commands {
		p.commands = append(p.commands, normalizeCommand(c))
	}
	p.authorized = make(map[callengine.UserID]bool, len(cfg.Authorized))
	for _, u := range cfg.Authorized {
		p.authorized[u] = true
	}
}

// Config returns the effective configuration (defaults filled in).
func (p *DoorPolicy) Config() DoorConfig { return p.cfg }

// Memory returns what must survive a restart, taken at now. Its times are
// the homeserver's: until a sync has shown its clock, NotBefore stays what
// the last run saved, and the board's own clock is never written.
func (p *DoorPolicy) Memory(now time.Time) DoorMemory {
	m := DoorMemory{NotBefore: p.notBefore, Floor: p.floor, Seen: make([]SeenItem, 0, len(p.order))}
	if srv, ok := p.serverNow(now); ok {
		srv = srv.Round(0)
		if !p.believable(m.NotBefore, srv) || srv.After(m.NotBefore) {
			m.NotBefore = srv
		}
		if !p.believable(m.Floor, srv) {
			// Raised by a timestamp from the future. Every event before
			// this run's start is refused anyway, so the start is as much
			// of a floor as is true.
			m.Floor, _ = p.serverNow(p.start)
			m.Floor = m.Floor.Round(0)
		}
	}
	for _, id := range p.order {
		m.Seen = append(m.Seen, SeenItem{ID: id, TS: p.seen[id]})
	}
	return m
}

// ServerTime tells the policy that the homeserver's clock read server at
// local time at (a sync response; the latest wins, so a homeserver whose
// clock was corrected is followed). From then on the policy trusts its
// clock: origin_server_ts is judged against the homeserver's clock at the
// time of the request, extrapolated from this reading by the local clock's
// elapsed time (monotonic when both readings carry it), so the board's
// wall clock, which may be hours behind or years ahead without an RTC or
// NTP, never enters a decision (issue 19, finding 3).
func (p *DoorPolicy) ServerTime(at, server time.Time) {
	if at.IsZero() || server.IsZero() {
		return
	}
	p.srvAt, p.srv = at, server.Round(0)
}

// serverNow estimates the homeserver's clock at local time now; ok is
// false while no sync has shown it.
func (p *DoorPolicy) serverNow(now time.Time) (time.Time, bool) {
	if p.srvAt.IsZero() {
		return time.Time{}, false
	}
	return p.srv.Add(now.Sub(p.srvAt)), true
}

// believable says whether a remembered time t can be true when the
// homeserver's clock reads srv: a time more than maxAhead ahead of it was
// written by a clock that was wrong (this board's before issue 19, or the
// homeserver's before it was corrected) or forged, and is not enforced.
func (p *DoorPolicy) believable(t, srv time.Time) bool {
	return !t.After(srv.Add(maxAhead))
}

// CallChanged tells the policy at now whether a call is connected.
func (p *DoorPolicy) CallChanged(now time.Time, inCall bool) {
	if inCall && !p.inCall {
		p.callSince = now
	}
	p.inCall = inCall
}

// Rang tells the policy a ring started at now.
func (p *DoorPolicy) Rang(now time.Time) { p.lastRing = now }

// NoticeSent records a ring notice a resident may react to. It belongs to
// the latest ring; a notice posted before any ring never opens the door.
func (p *DoorPolicy) NoticeSent(eventID string) {
	if eventID == "" {
		return
	}
	if _, ok := p.notices[eventID]; ok {
		return
	}
	if len(p.noticeIDs) >= maxNotices {
		delete(p.notices, p.noticeIDs[0])
		p.noticeIDs = p.noticeIDs[1:]
	}
	p.notices[eventID] = p.lastRing
	p.noticeIDs = append(p.noticeIDs, eventID)
}

// Decide judges one request received at now.
func (p *DoorPolicy) Decide(now time.Time, r DoorRequest) Decision {
	if r.Reaction {
		if normalizeKey(r.Key) != p.key {
			return Decision{Verdict: VerdictNotCommand}
		}
		if _, ok := p.notices[r.Target]; !ok {
			return Decision{Verdict: VerdictUnknownTarget, Why: "reaction to " + r.Target}
		}
	} else if !slices.Contains(p.commands, normalizeCommand(r.Text)) {
		return Decision{Verdict: VerdictNotCommand}
	}
	if r.EventID == "" {
		return Decision{Verdict: VerdictDuplicate, Why: "no event ID"}
	}
	if _, ok := p.seen[r.EventID]; ok {
		return Decision{Verdict: VerdictDuplicate, Why: "event handled before"}
	}
	if _, ok := p.strangers[r.EventID]; ok {
		return Decision{Verdict: VerdictDuplicate, Why: "event refused before"}
	}
	if !p.authorized[r.Sender] {
		return p.refuseStranger(now, r)
	}
	// Remembered before anything else is judged: an event is acted on at
	// most once, whatever came of its first delivery. Its time is kept no
	// later than the homeserver's clock when it arrived, so that forgetting
	// it can never raise the floor into the future, above the commands
	// that follow (issue 19, finding 2).
	ts := r.Timestamp
	if srv, ok := p.serverNow(now); ok && ts.After(srv) {
		ts = srv
	}
	p.remember(r.EventID, ts)
	if why, reply := p.untrusted(r); why != "" {
		return Decision{Verdict: VerdictUntrusted, Why: why, Changed: true, Reply: p.reply(now, r.Sender, reply)}
	}
	if v, why := p.stale(now, r); v != "" {
		return Decision{Verdict: v, Why: why, Changed: true}
	}
	d := Decision{Changed: true}
	switch {
	case r.Reaction && !p.noticeInWindow(now, p.notices[r.Target]):
		d.Verdict, d.Why = VerdictOutsideWindow, "reaction to the notice of a ring outside the window"
		d.Reply = p.reply(now, r.Sender, p.windowReply())
	case !r.Reaction && !p.inWindow(now):
		d.Verdict, d.Why = VerdictOutsideWindow, "no call connected and no recent ring"
		d.Reply = p.reply(now, r.Sender, p.windowReply())
	case !p.lastPulse.IsZero() && now.Sub(p.lastPulse) < p.cfg.Pulse:
		d.Verdict, d.Why = VerdictRateLimited, "door opened less than one pulse ago"
	default:
		d.Verdict, d.Pulse = VerdictOpen, p.cfg.Pulse
		p.lastPulse = now
	}
	return d
}

// untrusted says why a command's seal does not let it open the door, and
// what to tell its sender; "" if it does.
//
// A plaintext text command in an encrypted room is refused: clients never
// send messages in the clear there, while a homeserver can put any event
// there in a member's name. A plaintext reaction is not: Element Web
// (matrix-js-sdk) sends every m.reaction unencrypted, even in encrypted
// rooms, so that the homeserver can aggregate them. Such a reaction is
// only as trustworthy as the homeserver; an installer who does not trust
// the homeserver sets RequireCrossSigned, which refuses it (and leaves
// "!open", encrypted, to those residents).
func (p *DoorPolicy) untrusted(r DoorRequest) (why, reply string) {
	seal := r.Seal
	switch {
	case seal.RoomEncrypted && !seal.Encrypted && !r.Reaction:
		return "plaintext command in an encrypted room", ""
	case seal.Encrypted && seal.Trust < callengine.TrustDevice:
		return "encrypted with keys that are not those of a device of the sender", ""
	case p.cfg.RequireCrossSigned && !seal.Encrypted:
		return "not encrypted, so not tied to a device (door.require_cross_signed)",
			"Not opened: this was not sent encrypted from a verified device. Send the open command as a message instead."
	case p.cfg.RequireCrossSigned && seal.Trust < callengine.TrustCrossSigned:
		return fmt.Sprintf("device %q is not cross-signed by its user (door.require_cross_signed)", seal.Device),
			"Not opened: this device is not verified. Verify it from another of your devices (Settings → Sessions), then try again."
	}
	return "", ""
}

// refuseStranger refuses a command from a sender who is not authorised.
// Authorisation comes before the replay memory (issue 19, finding 2): any
// member of any joined room can send "!open" with any origin_server_ts, so
// a stranger's event must neither fill the memory of handled events nor
// raise its floor, nor make the door rewrite door.json (Changed stays
// false). Its ID is kept only in RAM, apart and bounded, so that it is
// still handled once (refused for good) if a reload authorises the sender
// before the sync delivers it again; strangers crowd out only each other
// there, and after a restart the start rule refuses the old event anyway.
// Only a fresh command earns a reply.
func (p *DoorPolicy) refuseStranger(now time.Time, r DoorRequest) Decision {
	if len(p.strangerIDs) >= maxSeen {
		delete(p.strangers, p.strangerIDs[0])
		p.strangerIDs = p.strangerIDs[1:]
	}
	p.strangers[r.EventID] = struct{}{}
	p.strangerIDs = append(p.strangerIDs, r.EventID)
	d := Decision{Verdict: VerdictUnauthorized, Why: "sender not in door.authorized"}
	if v, _ := p.stale(now, r); p.cfg.ReplyUnauthorized && v == "" {
		d.Reply = p.reply(now, r.Sender, "You are not allowed to open this door.")
	}
	return d
}

// stale says why r is too old (VerdictStale) or too new (VerdictFuture)
// to obey, or "". unsigned.age is the
// homeserver's own measure and needs no clock here: against the time since
// start (local, monotonic) it proves an event was sent during this run.
// origin_server_ts is compared only with the homeserver's clock
// (ServerTime); until a sync has shown it, a command without a usable age
// is refused (issue 19, finding 3). A timestamp more than maxAhead ahead
// of that clock is believed by no rule (issue 19, finding 2): whoever
// controls the sending server can set any origin_server_ts.
func (p *DoorPolicy) stale(now time.Time, r DoorRequest) (Verdict, string) {
	switch {
	case r.Timestamp.IsZero():
		return VerdictStale, "no origin_server_ts"
	case r.Age < 0:
		// Synapse computes age from its own clocks; a negative one means
		// they disagree, or a federating server lied about the age it
		// passed on. Either way the event's age is unknown.
		return VerdictStale, "negative age"
	case r.Age > 0 && r.Age > now.Sub(p.start):
		return VerdictStale, "age says it was sent before the intercom started"
	case r.Age > p.cfg.MaxAge:
		return VerdictStale, "older than the maximum command age"
	}
	srv, ok := p.serverNow(now)
	if !ok {
		if r.Age == 0 {
			return VerdictStale, "no unsigned.age and the homeserver's clock not known yet"
		}
		return "", ""
	}
	start, _ := p.serverNow(p.start)
	switch {
	case r.Timestamp.After(srv.Add(maxAhead)):
		return VerdictFuture, "sent more than a minute ahead of the homeserver's clock"
	case r.Timestamp.Before(start):
		return VerdictStale, "sent before the intercom started"
	case r.Timestamp.Before(p.notBefore) && p.believable(p.notBefore, srv):
		return VerdictStale, "sent before the previous run ended"
	case !p.floor.IsZero() && !r.Timestamp.After(p.floor) && p.believable(p.floor, srv):
		return VerdictStale, "older than the remembered events"
	case r.Age == 0 && srv.Sub(r.Timestamp) > p.cfg.MaxAge:
		return VerdictStale, "older than the maximum command age"
	}
	return "", ""
}

// inWindow says whether a command counts at now: during a call, or
// within Window after the last ring.
func (p *DoorPolicy) inWindow(now time.Time) bool {
	return p.inCall || p.ringOpen(now, p.lastRing)
}

// noticeInWindow says whether a reaction to the notice of the ring that
// started at ring counts at now: within Window of that ring, or during a
// call that connected soon enough after it to be its answer.
func (p *DoorPolicy) noticeInWindow(now, ring time.Time) bool {
	if ring.IsZero() {
		return false
	}
	if p.ringOpen(now, ring) {
		return true
	}
	return p.inCall && !p.callSince.Before(ring) && p.callSince.Sub(ring) <= max(p.cfg.Window, ringAnswer)
}

// ringOpen says whether the window of the ring that started at ring is
// open at now.
func (p *DoorPolicy) ringOpen(now, ring time.Time) bool {
	return !p.cfg.OnlyDuringCall && !ring.IsZero() && now.Sub(ring) <= p.cfg.Window
}

func (p *DoorPolicy) windowReply() string {
	if p.cfg.OnlyDuringCall {
		return "The door opens only during a call."
	}
	return "The door opens only during a call or within " + humanDuration(p.cfg.Window) + " of a ring."
}

// humanDuration writes whole minutes as words ("3 minutes"), other
// durations as Go does.
func humanDuration(d time.Duration) string {
	switch {
	case d == time.Minute:
		return "a minute"
	case d > 0 && d%time.Minute == 0:
		return fmt.Sprintf("%d minutes", d/time.Minute)
	}
	return d.String()
}

func (p *DoorPolicy) reply(now time.Time, to callengine.UserID, text string) string {
	if last, ok := p.replied[to]; ok && now.Sub(last) < replyInterval {
		return ""
	}
	if len(p.replied) >= maxSeen {
		clear(p.replied) // only a courtesy; never let strangers grow it
	}
	p.replied[to] = now
	return text
}

// remember adds an event ID, forgetting the oldest beyond maxSeen and
// raising the floor to its timestamp.
func (p *DoorPolicy) remember(id string, ts time.Time) {
	if _, ok := p.seen[id]; ok {
		return
	}
	if len(p.order) >= maxSeen {
		old := p.order[0]
		if t := p.seen[old]; t.After(p.floor) {
			p.floor = t
		}
		delete(p.seen, old)
		p.order = p.order[1:]
	}
	p.seen[id] = ts.Round(0)
	p.order = append(p.order, id)
}

func normalizeCommand(s string) string { return strings.ToLower(strings.TrimSpace(s)) }

// normalizeKey drops emoji variation selectors (U+FE0E, U+FE0F), which
// clients add or leave out for the same emoji, and surrounding space.
func normalizeKey(s string) string {
	return strings.TrimSpace(strings.NewReplacer("\ufe0f", "", "\ufe0e", "").Replace(s))
}
