package device

import (
	"context"
	"errors"
	"time"

	"github.com/doorbell/intercom/callengine"
)

// ringTracker follows each ring a press placed to its outcome, for the
// "ring" and "call" events and the visitor history. It reads the ring
// coordinator's RingInfo (callengine.Status.Ring), which names the ring
// and keeps its answer until the next press, so a status the press loop
// missed loses nothing. Intercom.Run owns it.
type ringTracker struct {
	// pending is the press (or the retry for a waiting visitor) whose
	// ring's first status has not been seen yet.
	pending *pendingRing
	cur     *trackedRing
}

type pendingRing struct {
	rangAt  time.Time
	pressAt time.Time // zero for a retry: its delay is not the press's
	placed  bool
	took    time.Duration
}

type trackedRing struct {
	n                          uint64
	rangAt                     time.Time
	answered, connected, ended bool
}

// ringPlacing is called before Caller.Ring for the visitor who pressed at
// rangAt; pressAt is the press being rung (zero for a retry).
func (d *Intercom) ringPlacing(rangAt, pressAt time.Time) {
	d.rings.pending = &pendingRing{rangAt: rangAt, pressAt: pressAt}
}

// ringPlaced takes Caller.Ring's answer. A ring nobody could be rung by
// is a failed visit at once; a busy door is no visit at all.
func (d *Intercom) ringPlaced(err error) {
	p := d.rings.pending
	if p == nil {
		return
	}
	switch {
	case err == nil:
		p.placed = true
		if !p.pressAt.IsZero() {
			p.took = time.Since(p.pressAt)
		}
	case errors.Is(err, callengine.ErrBusy):
		d.rings.pending = nil
	default:
		d.rings.pending = nil
		d.events.publish("call", CallEvent{RangAt: p.rangAt, Outcome: OutcomeFailed, Error: err.Error()})
		d.cfg.History.visitor(p.rangAt, d.snapshotNow(), func(e *HistoryEntry) {
			if e.Outcome == OutcomeRinging {
				e.Outcome = OutcomeFailed // a ring placed meanwhile keeps its outcome
			}
		})
	}
}

// followRing takes a status of the caller (after the notices had it, so
// their snapshot of a new ring is there to share).
func (d *Intercom) followRing(st callengine.Status) {
	t := &d.rings
	r := st.Ring
	if r == nil {
		return
	}
	if p := t.pending; p != nil && p.placed && (t.cur == nil || t.cur.n != r.N) {
		t.pending = nil
		t.cur = &trackedRing{n: r.N, rangAt: p.rangAt}
		d.events.publish("ring", RingEvent{Ring: r.N, RangAt: p.rangAt, Paths: r.Paths, PressToRing: p.took.Seconds()})
		pic := d.ringSnapshot(st)
		d.cfg.History.visitor(p.rangAt, pic, func(e *HistoryEntry) {
			e.Outcome, e.Paths, e.EndedAt = OutcomeRinging, r.Paths, time.Time{}
		})
	}
	c := t.cur
	if c == nil || c.n != r.N || c.ended {
		return
	}
	if r.AnsweredOn != "" && !c.answered {
		c.answered = true
		d.events.publish("call", CallEvent{Ring: r.N, RangAt: c.rangAt, Outcome: OutcomeAnswered, Path: r.AnsweredOn, AnsweredBy: r.AnsweredBy})
		d.cfg.History.visitor(c.rangAt, nil, func(e *HistoryEntry) {
			e.Outcome, e.Path, e.AnsweredBy = OutcomeAnswered, r.AnsweredOn, r.AnsweredBy
		})
	}
	if c.answered && !c.connected && !r.ConnectedAt.IsZero() {
		c.connected = true
		d.events.publish("call", CallEvent{Ring: r.N, RangAt: c.rangAt, Outcome: OutcomeConnected, Path: r.AnsweredOn,
			AnsweredBy: r.AnsweredBy, AnswerToMedia: r.ConnectedAt.Sub(r.AnsweredAt).Seconds()})
	}
	if st.Phase != callengine.PhaseIdle {
		return
	}
	c.ended = true
	ev := CallEvent{Ring: r.N, RangAt: c.rangAt, Outcome: OutcomeEnded, Path: r.AnsweredOn, AnsweredBy: r.AnsweredBy}
	switch {
	case c.answered:
	case unreached(st):
		ev.Outcome, ev.Error = OutcomeFailed, "no resident could be rung"
	default:
		ev.Outcome = OutcomeMissed
	}
	d.events.publish("call", ev)
	d.cfg.History.visitor(c.rangAt, nil, func(e *HistoryEntry) {
		e.EndedAt = time.Now()
		if !c.answered {
			e.Outcome = ev.Outcome
		}
	})
}

// ringSnapshot is the picture of the ring st shows: the notices' own
// (one camera grab per ring), else one taken by the history.
func (d *Intercom) ringSnapshot(st callengine.Status) func(context.Context) []byte {
	if d.cfg.History == nil {
		return nil
	}
	if d.cfg.Notices != nil {
		if pic := d.cfg.Notices.ringSnapshot(st); pic != nil {
			return func(context.Context) []byte { return pic() }
		}
	}
	return d.snapshotNow()
}

// snapshotNow is a picture for the history, taken when the history's Run
// calls it, off the press loop.
func (d *Intercom) snapshotNow() func(context.Context) []byte {
	if d.cfg.History == nil || d.cfg.Snapshot == nil {
		return nil
	}
	snap := d.cfg.Snapshot
	return func(ctx context.Context) []byte {
		ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		b, err := snap.Snapshot(ctx)
		if err != nil {
			d.log.Warn("snapshot for the visitor history", "err", err)
			return nil
		}
		return b
	}
}

// doorEvent passes the door's events on and marks a door opening in the
// visitor history.
func (d *Intercom) doorEvent(kind string, data any) {
	d.events.publish(kind, data)
	if ev, ok := data.(RelayEvent); ok && ev.On {
		d.cfg.History.doorOpened(ev.At, ev.Sender)
	}
}
