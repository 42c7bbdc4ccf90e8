// Package ring is the one rule for who rings and who wins. A press rings
// every configured path at once (classic 1:1 calls, the household group
// call, MatrixRTC); the first path on which somebody answers takes the
// ring, and every other path still ringing for that press is withdrawn.
// While any path rings or is in a call the door is busy. The status the
// device follows (ringer, notices, door policy, /api/status) is the paths'
// statuses merged.
//
// Machine is the rule, pure: no I/O, no goroutines, no clock reads.
// Coordinator runs it against real paths.
package ring

import (
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/doorbell/intercom/callengine"
)

// Path names one way of ringing the residents.
type Path string

// The paths the intercom rings on, in the order a press rings them: the
// classic invites first, since they are the quickest to leave.
const (
	Direct    Path = "direct"    // classic Matrix VoIP 1:1 calls, one per resident's room
	Household Path = "household" // the household room's famedly-style mesh group call
	MatrixRTC Path = "matrixrtc" // MatrixRTC (LiveKit) calls in the residents' rooms
)

// Event is an input of the machine.
type Event interface{ event() }

// Pressed: the bell was pressed.
type Pressed struct{}

// RingResult: a path was asked to ring (RingPath) and answered err; nil
// means it is ringing (or will, once its own loop takes the request).
type RingResult struct {
	Path Path
	Err  error
}

// PathChanged: a path's status changed. Phase is the path's phase as far
// as the ring is concerned (a household live view, which a press may ring
// over, is idle here); Calls are its legs for the merged status.
type PathChanged struct {
	Path   Path
	Status callengine.Status
}

// TimerFired: the StartTimer of the ring started at Ring fired.
type TimerFired struct{ Ring uint64 }

func (Pressed) event()     {}
func (RingResult) event()  {}
func (PathChanged) event() {}
func (TimerFired) event()  {}

// Effect is an output of the machine for the runner to carry out.
type Effect interface{ effect() }

// RingPath asks one path to ring. The runner feeds its outcome back as a
// RingResult before taking the next input, so paths are rung one after the
// other and a busy path stops the press before the others ring.
type RingPath struct{ Path Path }

// Withdraw tells a path that the ring was answered on another path: stop
// ringing, keep any call that is already connected.
type Withdraw struct{ Path Path }

// PressDone reports the outcome of a press: nil when at least one path
// rings, callengine.ErrBusy when the door was busy, else the paths' errors.
type PressDone struct{ Err error }

// Answered reports the path that took the ring.
type Answered struct{ Path Path }

// StartTimer asks for TimerFired{Ring} after After.
type StartTimer struct {
	Ring  uint64
	After time.Duration
}

func (RingPath) effect()   {}
func (Withdraw) effect()   {}
func (PressDone) effect()  {}
func (Answered) effect()   {}
func (StartTimer) effect() {}

// StartGrace is how long a path that accepted a ring may take to show it
// (its own loop takes the request; the household call may still be
// joining its room). Until then the path counts as ringing, so the door
// is busy and the ringer rings; after it, a path that never started
// ringing no longer holds the door.
const StartGrace = 5 * time.Second

// Machine is the ring rule over a fixed set of paths.
type Machine struct {
	order []Path
	paths map[Path]callengine.Status

	// The ring of the last press, while it lasts.
	n        uint64 // rings so far; names the current one's timer
	ringing  bool
	pressing bool          // between Pressed and the last RingResult
	next     int           // index in order of the next path to ring
	rung     []Path        // paths that accepted the ring
	pending  map[Path]bool // rung, not yet seen ringing, within StartGrace
	errs     []error       // paths that refused it
	winner   Path          // "" until somebody answered
	since    time.Time     // when the merged phase last changed
	phase    callengine.Phase
	// How the last press's ring went (Status().Ring), kept past its end
	// until the next press.
	answer callengine.RingInfo
}

// New returns a machine for paths, rung in that order.
func New(paths ...Path) *Machine {
	m := &Machine{order: slices.Clone(paths), paths: map[Path]callengine.Status{}, phase: callengine.PhaseIdle}
	for _, p := range paths {
		m.paths[p] = callengine.Status{Phase: callengine.PhaseIdle}
	}
	return m
}

// Step advances the machine by one event. It never blocks and never reads
// the clock: now is the time of the event.
func (m *Machine) Step(now time.Time, ev Event) []Effect {
	var out []Effect
	switch e := ev.(type) {
	case Pressed:
		out = m.press()
	case RingResult:
		out = m.ringResult(e)
	case PathChanged:
		if _, ok := m.paths[e.Path]; !ok {
			return nil
		}
		m.paths[e.Path] = e.Status
		if e.Status.Phase != callengine.PhaseIdle {
			delete(m.pending, e.Path)
		}
		out = m.changed()
	case TimerFired:
		if e.Ring == m.n && m.ringing {
			clear(m.pending)
			out = m.changed()
		}
	}
	if p := m.Phase(); p != m.phase {
		m.phase, m.since = p, now
	}
	m.noteAnswer(now)
	return out
}

// noteAnswer records, once per ring, when the winning path answered, who
// answered on it and when its media first connected.
func (m *Machine) noteAnswer(now time.Time) {
	a := &m.answer
	if m.winner != "" && a.AnsweredOn == "" {
		a.AnsweredOn, a.AnsweredAt = PathName(m.winner), now
	}
	if a.AnsweredOn == "" || !a.ConnectedAt.IsZero() && a.AnsweredBy != "" {
		return
	}
	for _, c := range m.paths[pathOf(a.AnsweredOn)].Calls {
		switch c.State {
		case callengine.LegConnected:
			if a.ConnectedAt.IsZero() {
				a.ConnectedAt = now
			}
			fallthrough
		case callengine.LegAnswering, callengine.LegAnswered:
			if a.AnsweredBy == "" {
				a.AnsweredBy = c.Resident
			}
		}
	}
}

// PathName is the path's name outside the ring (metrics, events, the
// status's ring): the direct path is "classic", as residents[].paths
// calls it.
func PathName(p Path) string {
	if p == Direct {
		return "classic"
	}
	return string(p)
}

func pathOf(name string) Path {
	if name == "classic" {
		return Direct
	}
	return Path(name)
}

func (m *Machine) press() []Effect {
	if m.Phase() != callengine.PhaseIdle {
		return []Effect{PressDone{Err: callengine.ErrBusy}}
	}
	if len(m.order) == 0 {
		return []Effect{PressDone{Err: callengine.ErrNoResidents}}
	}
	m.n++
	m.ringing, m.pressing, m.next = true, true, 0
	m.rung, m.errs, m.winner, m.pending = nil, nil, "", map[Path]bool{}
	m.answer = callengine.RingInfo{N: m.n, Paths: []string{}}
	return append([]Effect{StartTimer{Ring: m.n, After: StartGrace}}, m.ringNext()...)
}

// ringNext rings the next path, or ends the press when all were asked.
func (m *Machine) ringNext() []Effect {
	if m.next < len(m.order) {
		p := m.order[m.next]
		m.next++
		return []Effect{RingPath{Path: p}}
	}
	m.pressing = false
	if len(m.rung) > 0 {
		return append([]Effect{PressDone{}}, m.changed()...)
	}
	m.ringing = false
	return []Effect{PressDone{Err: errors.Join(m.errs...)}}
}

func (m *Machine) ringResult(e RingResult) []Effect {
	if !m.pressing || m.order[m.next-1] != e.Path {
		return nil // not the answer the press waits for
	}
	var out []Effect
	switch {
	case e.Err == nil:
		m.rung = append(m.rung, e.Path)
		m.answer.Paths = append(m.answer.Paths, PathName(e.Path))
		if m.paths[e.Path].Phase == callengine.PhaseIdle {
			m.pending[e.Path] = true
		}
		if m.winner != "" {
			// Answered on an earlier path while this one was asked.
			out = append(out, Withdraw{Path: e.Path})
		}
	case errors.Is(e.Err, callengine.ErrBusy):
		// A path busy on its own (a resident's live view that the
		// merged status did not show yet): the door is busy, and the
		// paths rung so far stop again.
		m.pressing, m.ringing = false, false
		clear(m.pending)
		for _, p := range m.rung {
			out = append(out, Withdraw{Path: p})
		}
		return append(out, PressDone{Err: callengine.ErrBusy})
	default:
		m.errs = append(m.errs, fmt.Errorf("ring %s: %w", e.Path, e.Err))
	}
	return append(out, m.ringNext()...)
}

// changed applies the first-answer rule after a path's status changed.
func (m *Machine) changed() []Effect {
	if !m.ringing {
		return nil
	}
	var out []Effect
	if m.winner == "" {
		for _, p := range m.rung {
			if m.paths[p].Phase == callengine.PhaseInCall {
				m.winner = p
				out = append(out, Answered{Path: p})
				break
			}
		}
		if m.winner != "" {
			// Every other path this press rang is withdrawn, whatever
			// its status shows: its own loop may not have started
			// ringing yet, and a withdraw it takes after the ring stops
			// that ring. A path already in a call keeps it (two answers
			// at the same moment).
			for _, p := range m.rung {
				if p != m.winner && m.paths[p].Phase != callengine.PhaseInCall {
					out = append(out, Withdraw{Path: p})
				}
			}
			clear(m.pending)
		}
	}
	if !m.pressing && len(m.pending) == 0 && m.allIdle() {
		m.ringing, m.winner = false, ""
	}
	return out
}

func (m *Machine) allIdle() bool {
	for _, p := range m.order {
		if m.paths[p].Phase != callengine.PhaseIdle {
			return false
		}
	}
	return true
}

// Phase is the merged phase: in a call if any path is, else ringing if
// any path rings or a rung path has yet to show it, else idle.
func (m *Machine) Phase() callengine.Phase {
	ph := callengine.PhaseIdle
	if m.pressing || len(m.pending) > 0 {
		ph = callengine.PhaseRinging
	}
	for _, p := range m.order {
		switch m.paths[p].Phase {
		case callengine.PhaseInCall:
			return callengine.PhaseInCall
		case callengine.PhaseRinging:
			ph = callengine.PhaseRinging
		}
	}
	return ph
}

// Winner is the path that took the current ring, "" if none (yet).
func (m *Machine) Winner() Path { return m.winner }

// Status is the paths' statuses merged: the merged phase since it was
// entered, and every path's legs, in path order.
func (m *Machine) Status() callengine.Status {
	st := callengine.Status{Phase: m.Phase(), Since: m.since, Calls: []callengine.CallStatus{}}
	for _, p := range m.order {
		st.Calls = append(st.Calls, m.paths[p].Calls...)
	}
	if m.answer.N > 0 {
		r := m.answer
		r.Paths = slices.Clone(r.Paths)
		st.Ring = &r
	}
	return st
}
