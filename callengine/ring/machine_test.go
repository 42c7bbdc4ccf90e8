package ring

import (
	"errors"
	"fmt"
	"reflect"
	"testing"
	"time"

	"github.com/doorbell/intercom/callengine"
)

var t0 = time.Date(2026, 12, 6, 14, 3, 0, 0, time.UTC)

func status(ph callengine.Phase, legs ...string) callengine.Status {
	st := callengine.Status{Phase: ph}
	for _, l := range legs {
		st.Calls = append(st.Calls, callengine.CallStatus{CallID: callengine.CallID(l)})
	}
	return st
}

// press steps a press, answering every RingPath with results[path] (nil
// when absent), and returns every effect but the RingPaths and the paths
// rung.
func press(t *testing.T, m *Machine, now time.Time, results map[Path]error) (effects []Effect, rung []Path) {
	t.Helper()
	queue := []Event{Pressed{}}
	for len(queue) > 0 {
		ev := queue[0]
		queue = queue[1:]
		for _, eff := range m.Step(now, ev) {
			if rp, ok := eff.(RingPath); ok {
				rung = append(rung, rp.Path)
				queue = append(queue, RingResult{Path: rp.Path, Err: results[rp.Path]})
				continue
			}
			effects = append(effects, eff)
		}
	}
	return effects, rung
}

func withdrawn(effs []Effect) []Path {
	var out []Path
	for _, e := range effs {
		if w, ok := e.(Withdraw); ok {
			out = append(out, w.Path)
		}
	}
	return out
}

func pressErr(t *testing.T, effs []Effect) error {
	t.Helper()
	for _, e := range effs {
		if d, ok := e.(PressDone); ok {
			return d.Err
		}
	}
	t.Fatalf("no PressDone in %v", effs)
	return nil
}

func TestPressRingsEveryPathInOrder(t *testing.T) {
	m := New(Direct, Household, MatrixRTC)
	effs, rung := press(t, m, t0, nil)
	if want := []Path{Direct, Household, MatrixRTC}; !reflect.DeepEqual(rung, want) {
		t.Fatalf("rung %v, want %v", rung, want)
	}
	if err := pressErr(t, effs); err != nil {
		t.Fatal(err)
	}
	// Until a path shows its ring the door is busy: it counts as ringing.
	if m.Phase() != callengine.PhaseRinging {
		t.Fatalf("phase %s after the press, want ringing", m.Phase())
	}
	if st := m.Status(); st.Since != t0 {
		t.Fatalf("since %v, want the press", st.Since)
	}
}

// The bug of issue 13: the household answered and the classic calls rang
// on. Whichever path answers first, every other path is withdrawn once.
func TestFirstAnswerWithdrawsEveryOtherPath(t *testing.T) {
	for _, winner := range []Path{Direct, Household, MatrixRTC} {
		t.Run(string(winner), func(t *testing.T) {
			m := New(Direct, Household, MatrixRTC)
			press(t, m, t0, nil)
			for _, p := range []Path{Direct, Household, MatrixRTC} {
				if effs := m.Step(t0, PathChanged{Path: p, Status: status(callengine.PhaseRinging, string(p))}); len(effs) != 0 {
					t.Fatalf("%s ringing: %v", p, effs)
				}
			}
			effs := m.Step(t0.Add(time.Second), PathChanged{Path: winner, Status: status(callengine.PhaseInCall, string(winner))})
			var want []Path
			for _, p := range []Path{Direct, Household, MatrixRTC} {
				if p != winner {
					want = append(want, p)
				}
			}
			if got := withdrawn(effs); !reflect.DeepEqual(got, want) {
				t.Fatalf("withdrawn %v, want %v (effects %v)", got, want, effs)
			}
			if m.Winner() != winner || m.Phase() != callengine.PhaseInCall {
				t.Fatalf("winner %q phase %s", m.Winner(), m.Phase())
			}
			// Later changes withdraw nothing again.
			for _, p := range want {
				if effs := m.Step(t0.Add(2*time.Second), PathChanged{Path: p, Status: status(callengine.PhaseRinging)}); len(withdrawn(effs)) != 0 {
					t.Fatalf("withdrawn twice: %v", effs)
				}
			}
		})
	}
}

// A path that has not shown its ring yet when another answers is
// withdrawn all the same (its loop takes the withdraw after the ring).
func TestAnswerBeforeAPathShowsItsRing(t *testing.T) {
	m := New(Direct, Household, MatrixRTC)
	press(t, m, t0, nil)
	m.Step(t0, PathChanged{Path: Direct, Status: status(callengine.PhaseRinging)})
	effs := m.Step(t0, PathChanged{Path: Household, Status: status(callengine.PhaseInCall)})
	if got, want := withdrawn(effs), []Path{Direct, MatrixRTC}; !reflect.DeepEqual(got, want) {
		t.Fatalf("withdrawn %v, want %v", got, want)
	}
}

// Two answers at the same moment: the path already in a call keeps it.
func TestSimultaneousAnswersKeepBothCalls(t *testing.T) {
	m := New(Direct, Household)
	press(t, m, t0, nil)
	m.Step(t0, PathChanged{Path: Direct, Status: status(callengine.PhaseInCall)})
	// Direct won; Household was withdrawn. It was in a call already
	// when the news reached it: that call is not withdrawn again.
	effs := m.Step(t0, PathChanged{Path: Household, Status: status(callengine.PhaseInCall)})
	if len(withdrawn(effs)) != 0 {
		t.Fatalf("withdrawn %v", effs)
	}
	m2 := New(Direct, Household)
	press(t, m2, t0, nil)
	m2.Step(t0, PathChanged{Path: Household, Status: status(callengine.PhaseInCall)})
	if effs := m2.Step(t0, PathChanged{Path: Direct, Status: status(callengine.PhaseInCall)}); len(withdrawn(effs)) != 0 {
		t.Fatalf("a second call withdrawn: %v", effs)
	}
}

func TestBusy(t *testing.T) {
	m := New(Direct, Household)
	press(t, m, t0, nil)
	m.Step(t0, PathChanged{Path: Direct, Status: status(callengine.PhaseRinging)})
	effs, rung := press(t, m, t0, nil)
	if !errors.Is(pressErr(t, effs), callengine.ErrBusy) || len(rung) != 0 {
		t.Fatalf("press while ringing: %v, rung %v", effs, rung)
	}
	// In a call, still busy.
	m.Step(t0, PathChanged{Path: Household, Status: status(callengine.PhaseInCall)})
	if effs, _ := press(t, m, t0, nil); !errors.Is(pressErr(t, effs), callengine.ErrBusy) {
		t.Fatalf("press in a call: %v", effs)
	}
	// Everything idle again: a press rings.
	m.Step(t0, PathChanged{Path: Direct, Status: status(callengine.PhaseIdle)})
	m.Step(t0, PathChanged{Path: Household, Status: status(callengine.PhaseIdle)})
	if m.Phase() != callengine.PhaseIdle {
		t.Fatalf("phase %s", m.Phase())
	}
	if effs, rung := press(t, m, t0, nil); pressErr(t, effs) != nil || len(rung) != 2 {
		t.Fatalf("press when idle: %v rung %v", effs, rung)
	}
}

// A path that is busy on its own (a resident's live view the status had
// not shown yet) makes the press busy: the paths rung before it are
// withdrawn and the later ones are not rung.
func TestPathBusyStopsThePress(t *testing.T) {
	m := New(Household, Direct, MatrixRTC)
	effs, rung := press(t, m, t0, map[Path]error{Direct: callengine.ErrBusy})
	if !errors.Is(pressErr(t, effs), callengine.ErrBusy) {
		t.Fatalf("press: %v", effs)
	}
	if want := []Path{Household, Direct}; !reflect.DeepEqual(rung, want) {
		t.Fatalf("rung %v, want %v", rung, want)
	}
	if got := withdrawn(effs); !reflect.DeepEqual(got, []Path{Household}) {
		t.Fatalf("withdrawn %v", got)
	}
	if m.Phase() != callengine.PhaseIdle {
		t.Fatalf("phase %s, want idle", m.Phase())
	}
}

// A path that cannot ring does not stop the others; if none can, the
// press fails with every reason and the door is idle.
func TestPathErrors(t *testing.T) {
	m := New(Direct, MatrixRTC)
	boom := errors.New("boom")
	effs, _ := press(t, m, t0, map[Path]error{Direct: boom})
	if err := pressErr(t, effs); err != nil {
		t.Fatalf("one path rang: %v", err)
	}
	m = New(Direct, MatrixRTC)
	effs, _ = press(t, m, t0, map[Path]error{Direct: boom, MatrixRTC: callengine.ErrNoResidents})
	err := pressErr(t, effs)
	if !errors.Is(err, boom) || !errors.Is(err, callengine.ErrNoResidents) {
		t.Fatalf("press error %v, want both paths' errors", err)
	}
	if m.Phase() != callengine.PhaseIdle {
		t.Fatalf("phase %s, want idle", m.Phase())
	}
	if effs, _ := press(t, New(), t0, nil); !errors.Is(pressErr(t, effs), callengine.ErrNoResidents) {
		t.Fatalf("no paths: %v", effs)
	}
}

// A path that took the ring but never shows it holds the door for
// StartGrace at most.
func TestStartGrace(t *testing.T) {
	m := New(Direct, Household)
	effs, _ := press(t, m, t0, nil)
	var timer *StartTimer
	for _, e := range effs {
		if st, ok := e.(StartTimer); ok {
			timer = &st
		}
	}
	if timer == nil || timer.After != StartGrace {
		t.Fatalf("no start timer in %v", effs)
	}
	m.Step(t0, PathChanged{Path: Direct, Status: status(callengine.PhaseRinging)})
	m.Step(t0.Add(time.Second), PathChanged{Path: Direct, Status: status(callengine.PhaseIdle)})
	if m.Phase() != callengine.PhaseRinging {
		t.Fatalf("phase %s while the household has not shown its ring", m.Phase())
	}
	// A stale timer of an earlier ring changes nothing.
	m.Step(t0.Add(StartGrace), TimerFired{Ring: timer.Ring - 1})
	if m.Phase() != callengine.PhaseRinging {
		t.Fatalf("stale timer: phase %s", m.Phase())
	}
	m.Step(t0.Add(StartGrace), TimerFired{Ring: timer.Ring})
	if m.Phase() != callengine.PhaseIdle {
		t.Fatalf("phase %s after the grace", m.Phase())
	}
	if st := m.Status(); !st.Since.Equal(t0.Add(StartGrace)) {
		t.Fatalf("since %v", st.Since)
	}
}

// A ring ends when every path is idle; an answer in the next ring is
// judged afresh.
func TestRingEndsWhenAllIdle(t *testing.T) {
	m := New(Direct, Household)
	press(t, m, t0, nil)
	m.Step(t0, PathChanged{Path: Direct, Status: status(callengine.PhaseRinging)})
	m.Step(t0, PathChanged{Path: Household, Status: status(callengine.PhaseInCall)})
	m.Step(t0, PathChanged{Path: Direct, Status: status(callengine.PhaseIdle)})
	m.Step(t0, PathChanged{Path: Household, Status: status(callengine.PhaseIdle)})
	if m.Winner() != "" || m.Phase() != callengine.PhaseIdle {
		t.Fatalf("winner %q phase %s after all idle", m.Winner(), m.Phase())
	}
	press(t, m, t0, nil)
	m.Step(t0, PathChanged{Path: Household, Status: status(callengine.PhaseRinging)})
	effs := m.Step(t0, PathChanged{Path: Direct, Status: status(callengine.PhaseInCall)})
	if got := withdrawn(effs); !reflect.DeepEqual(got, []Path{Household}) {
		t.Fatalf("second ring: withdrawn %v", got)
	}
}

// A call that no press rang (a resident's live view) withdraws nothing
// and makes the door busy.
func TestCallWithoutPress(t *testing.T) {
	m := New(Direct, Household)
	effs := m.Step(t0, PathChanged{Path: Direct, Status: status(callengine.PhaseInCall, "live")})
	if len(effs) != 0 {
		t.Fatalf("effects %v", effs)
	}
	if st := m.Status(); st.Phase != callengine.PhaseInCall || len(st.Calls) != 1 {
		t.Fatalf("status %+v", st)
	}
	if effs, _ := press(t, m, t0, nil); !errors.Is(pressErr(t, effs), callengine.ErrBusy) {
		t.Fatalf("press: %v", effs)
	}
}

func TestStatusMergesLegsInPathOrder(t *testing.T) {
	m := New(Direct, Household, MatrixRTC)
	m.Step(t0, PathChanged{Path: MatrixRTC, Status: status(callengine.PhaseRinging, "r1")})
	m.Step(t0, PathChanged{Path: Direct, Status: status(callengine.PhaseRinging, "d1", "d2")})
	m.Step(t0, PathChanged{Path: "unknown", Status: status(callengine.PhaseInCall, "x")})
	var ids []string
	for _, c := range m.Status().Calls {
		ids = append(ids, string(c.CallID))
	}
	if got := fmt.Sprint(ids); got != "[d1 d2 r1]" {
		t.Fatalf("legs %s", got)
	}
}

// TestRingInfo: the merged status tells which paths a press rang, which
// one won, who answered there and when its media connected, and keeps it
// after the call until the next press.
func TestRingInfo(t *testing.T) {
	m := New(Direct, Household, MatrixRTC)
	press(t, m, t0, map[Path]error{MatrixRTC: errors.New("no transport")})
	r := m.Status().Ring
	if r == nil || r.N != 1 || !reflect.DeepEqual(r.Paths, []string{"classic", "household"}) || r.AnsweredOn != "" {
		t.Fatalf("after the press: %+v", r)
	}
	leg := func(state callengine.LegState) callengine.Status {
		return callengine.Status{Phase: callengine.PhaseInCall, Calls: []callengine.CallStatus{{CallID: "h", Resident: "@bob:hs", State: state}}}
	}
	m.Step(t0.Add(time.Second), PathChanged{Path: Household, Status: leg(callengine.LegAnswered)})
	m.Step(t0.Add(2*time.Second), PathChanged{Path: Household, Status: leg(callengine.LegConnected)})
	m.Step(t0.Add(3*time.Second), PathChanged{Path: Direct, Status: status(callengine.PhaseIdle)})
	m.Step(t0.Add(time.Minute), PathChanged{Path: Household, Status: status(callengine.PhaseIdle)})
	want := callengine.RingInfo{N: 1, Paths: []string{"classic", "household"}, AnsweredOn: "household", AnsweredBy: "@bob:hs",
		AnsweredAt: t0.Add(time.Second), ConnectedAt: t0.Add(2 * time.Second)}
	if st := m.Status(); st.Phase != callengine.PhaseIdle || st.Ring == nil || !reflect.DeepEqual(*st.Ring, want) {
		t.Fatalf("after the call: %+v, want %+v", st.Ring, want)
	}
	press(t, m, t0.Add(2*time.Minute), nil)
	if r := m.Status().Ring; r.N != 2 || r.AnsweredOn != "" || len(r.Paths) != 3 {
		t.Errorf("next press: %+v", r)
	}
}
