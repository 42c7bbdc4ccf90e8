package device

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/doorbell/intercom/callengine"
)

// Snapshotter takes one JPEG picture from the camera. The media package's
// camera implements it; cmd wires a test-pattern one for the simulation.
type Snapshotter interface {
	Snapshot(ctx context.Context) ([]byte, error)
}

// NoticeOptions configure Notices.
type NoticeOptions struct {
	Messenger Messenger
	// Snapshot, if set, adds a picture to the ring and missed notices.
	Snapshot Snapshotter
	// Ring posts a notice into every rung room when a ring starts; Missed
	// posts one when a ring ends without an answer.
	Ring, Missed bool
	// CommandHint is appended to the ring notice, e.g. how to open the
	// door; "" for none.
	CommandHint string
	// Door, if set, learns the ring notices' event IDs (reactions to them
	// open the door).
	Door *Door
	// Household, if set, adds the household room to the rooms of every
	// ring and missed-visitor notice, and counts a household device
	// connected to the door as an answer. May be nil.
	Household Household
	Logger    *slog.Logger
	// Location formats times in notices; default time.Local.
	Location *time.Location
	// Visitors, if set, keeps each missed-visitor notice in the state
	// directory until it is delivered (VisitorQueue), so that a visitor
	// who rang while the homeserver was away is told of once it is back.
	// Nil posts it once, best effort.
	Visitors VisitorLog
}

// VisitorLog keeps a missed-visitor notice until it reaches its rooms;
// VisitorQueue implements it.
type VisitorLog interface {
	Add(v Visitor) error
	// Cancel withdraws the notice of the visitor who rang at rangAt, if
	// it is still waiting; Hold holds it back until notBefore.
	Cancel(rangAt time.Time)
	Hold(rangAt, notBefore time.Time)
}

// Household is the household group call as the notices see it;
// group.Runner (the household path) implements it.
type Household interface {
	// Rooms are the rooms notices also go to (the household room once
	// it is joined).
	Rooms() []callengine.RoomID
	// AnsweredSince reports whether a household device has been connected
	// to the door at or after t.
	AnsweredSince(t time.Time) bool
}

// Notices posts ring and missed-visitor notices into residents' rooms. It
// follows the call engine's status (Follow); every post runs on its own
// goroutine, so the ring's invites are never delayed by a notice or an
// upload.
type Notices struct {
	opts NoticeOptions
	log  *slog.Logger

	// Follow's state: it is called from one goroutine (Intercom.Run).
	ring *ringTrack
	// visitorAt, when set (RingFor), is when the visitor of the next ring
	// pressed: a ring placed late, once the homeserver was back, tells
	// the time they rang, not the time it reached the residents.
	visitorAt time.Time

	wg sync.WaitGroup
}

// ringTrack is what Follow knows of the current ring.
type ringTrack struct {
	calls    map[callengine.CallID]bool
	rooms    []callengine.RoomID
	started  time.Time
	answered bool
	ended    bool
	// snapshot is taken once per ring and shared by every room.
	snapshot func() []byte
}

// NewNotices returns Notices; nothing is posted until Follow sees a ring.
func NewNotices(opts NoticeOptions) *Notices {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Location == nil {
		opts.Location = time.Local
	}
	return &Notices{opts: opts, log: opts.Logger}
}

// Follow takes a status of the call engine. A ring is told apart by its
// call IDs: the engine publishes only the latest status to a slow reader,
// so transitions may be skipped, but every ring brings new call IDs and
// its calls' end reasons stay in the status until the next ring.
func (n *Notices) Follow(st callengine.Status) {
	if len(st.Calls) == 0 {
		return
	}
	if n.ring == nil || !n.ring.calls[st.Calls[0].CallID] {
		if st.Phase != callengine.PhaseRinging {
			// A status of calls we never saw ringing: an inbound call
			// (live view), or a ring that came and went unseen.
			return
		}
		n.startRing(st)
	}
	r := n.ring
	for _, c := range st.Calls {
		if c.State == callengine.LegAnswering || c.State == callengine.LegAnswered || c.State == callengine.LegConnected {
			r.answered = true
		}
	}
	if st.Phase == callengine.PhaseInCall {
		r.answered = true
	}
	if r.ended || st.Phase != callengine.PhaseIdle {
		return
	}
	r.ended = true
	if !r.answered && n.opts.Household != nil && n.opts.Household.AnsweredSince(r.started) {
		r.answered = true // a household device took the ring
	}
	timedOut := slices.ContainsFunc(st.Calls, func(c callengine.CallStatus) bool {
		return c.Reason == callengine.ReasonInviteTimeout
	})
	// A ring whose invites could not be sent at all (the homeserver
	// away) is the Intercom's to tell of (Unreached), once the bell has
	// stopped and the residents could not be rung after all.
	if r.answered || !timedOut || !n.opts.Missed {
		return
	}
	at := r.started.In(n.opts.Location).Format("15:04:05")
	text := fmt.Sprintf("Missed visitor: someone rang at %s and nobody answered.", at)
	n.log.Info("missed visitor", "rang_at", r.started, "rooms", len(r.rooms))
	if n.opts.Visitors == nil {
		for _, room := range r.rooms {
			n.post(room, text, true, r.snapshot, "missed")
		}
		return
	}
	n.queue(Visitor{RangAt: r.started, Text: text, Rooms: slices.Clone(r.rooms)}, r.snapshot)
}

// Unreached keeps the notice of a visitor who rang at rangAt while the
// residents could not be rung (the homeserver away, or not reached yet
// since start), with a snapshot taken now, for delivery from until on
// (when the bell stops): into every resident's room as known then. The
// Intercom calls it once per visitor; Reached withdraws it.
func (n *Notices) Unreached(rangAt, until time.Time) {
	if !n.opts.Missed {
		return
	}
	text := fmt.Sprintf("Missed visitor: someone rang at %s while the door could not reach you.", rangAt.In(n.opts.Location).Format("15:04:05"))
	n.log.Info("missed visitor: the residents could not be rung", "rang_at", rangAt)
	if n.opts.Visitors == nil {
		n.log.Warn("no visitor queue: the notice of a visitor nobody could be told of is lost", "rang_at", rangAt)
		return
	}
	n.queue(Visitor{RangAt: rangAt, Text: text, NotBefore: until}, n.snapshotOnce())
}

// Reached withdraws the notice Unreached kept for the visitor who rang at
// rangAt: the residents were rung after all (the homeserver came back
// while the bell still rang).
func (n *Notices) Reached(rangAt time.Time) {
	if n.opts.Missed && n.opts.Visitors != nil {
		n.opts.Visitors.Cancel(rangAt)
	}
}

// Hold holds the notice Unreached kept for the visitor who rang at rangAt
// back until notBefore: the residents are being rung for them.
func (n *Notices) Hold(rangAt, notBefore time.Time) {
	if n.opts.Missed && n.opts.Visitors != nil {
		n.opts.Visitors.Hold(rangAt, notBefore)
	}
}

// queue adds v to the visitor log with its snapshot once the camera has
// it, off the caller's goroutine.
func (n *Notices) queue(v Visitor, pic func() []byte) {
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		v.JPEG = pic()
		if err := n.opts.Visitors.Add(v); err != nil {
			n.log.Error("queue the missed-visitor notice", "err", err)
		}
	}()
}

// RingFor says that the next ring is for a visitor who pressed at t (zero:
// forget it, the ring was not placed). Called from Follow's goroutine.
func (n *Notices) RingFor(t time.Time) { n.visitorAt = t }

func (n *Notices) startRing(st callengine.Status) {
	r := &ringTrack{calls: map[callengine.CallID]bool{}, started: time.Now()}
	if !st.Since.IsZero() {
		r.started = st.Since
	}
	if !n.visitorAt.IsZero() {
		r.started, n.visitorAt = n.visitorAt, time.Time{}
	}
	for _, c := range st.Calls {
		r.calls[c.CallID] = true
		if !slices.Contains(r.rooms, c.Room) {
			r.rooms = append(r.rooms, c.Room)
		}
	}
	if n.opts.Household != nil {
		for _, room := range n.opts.Household.Rooms() {
			if room != "" && !slices.Contains(r.rooms, room) {
				r.rooms = append(r.rooms, room)
			}
		}
	}
	r.snapshot = n.snapshotOnce()
	n.ring = r
	if n.opts.Door != nil {
		n.opts.Door.rang()
	}
	if !n.opts.Ring {
		return
	}
	text := fmt.Sprintf("🔔 Someone is at the door (%s).", r.started.In(n.opts.Location).Format("15:04:05"))
	if n.opts.CommandHint != "" {
		text += " " + n.opts.CommandHint
	}
	for _, room := range r.rooms {
		n.post(room, text, true, r.snapshot, "ring")
	}
}

// ringSnapshot is the snapshot of the ring st belongs to, if Follow saw
// that ring start; nil if not.
func (n *Notices) ringSnapshot(st callengine.Status) func() []byte {
	if n.ring == nil || len(st.Calls) == 0 || !n.ring.calls[st.Calls[0].CallID] {
		return nil
	}
	return n.ring.snapshot
}

// snapshotOnce starts taking a picture now and returns a function that
// waits for it (nil bytes if there is no camera or it failed).
func (n *Notices) snapshotOnce() func() []byte {
	if n.opts.Snapshot == nil {
		return func() []byte { return nil }
	}
	done := make(chan struct{})
	var pic []byte
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		defer close(done)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		t0 := time.Now()
		p, err := n.opts.Snapshot.Snapshot(ctx)
		if err != nil {
			n.log.Warn("snapshot for notices", "err", err)
			return
		}
		n.log.Debug("snapshot taken", "bytes", len(p), "took", time.Since(t0))
		pic = p
	}()
	return func() []byte { <-done; return pic }
}

// post sends text, then the picture, into room on a goroutine of its own.
func (n *Notices) post(room callengine.RoomID, text string, notify bool, pic func() []byte, kind string) {
	if n.opts.Messenger == nil {
		return
	}
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		ctx, cancel := context.WithTimeout(context.Background(), sendTimeout)
		defer cancel()
		t0 := time.Now()
		id, err := n.opts.Messenger.SendText(ctx, room, text, notify)
		if err != nil {
			n.log.Warn("post "+kind+" notice", "room_id", room, "err", err)
		} else {
			n.log.Info(kind+" notice posted", "room_id", room, "event_id", id, "took", time.Since(t0))
			if kind == "ring" && n.opts.Door != nil {
				n.opts.Door.NoticeSent(id)
			}
		}
		jpeg := pic()
		if jpeg == nil {
			return
		}
		name := fmt.Sprintf("door-%s.jpg", time.Now().In(n.opts.Location).Format("20060102-150405"))
		id, err = n.opts.Messenger.SendJPEG(ctx, room, "Snapshot from the door", name, jpeg)
		if err != nil {
			n.log.Warn("post "+kind+" snapshot", "room_id", room, "err", err)
			return
		}
		n.log.Info(kind+" snapshot posted", "room_id", room, "event_id", id, "bytes", len(jpeg))
		if kind == "ring" && n.opts.Door != nil {
			n.opts.Door.NoticeSent(id)
		}
	}()
}

// Wait waits for the notices in flight (tests, shutdown).
func (n *Notices) Wait() { n.wg.Wait() }
