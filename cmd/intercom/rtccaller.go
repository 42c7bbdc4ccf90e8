package main

import (
	"context"
	"errors"
	"slices"
	"strings"

	"github.com/doorbell/intercom/callengine"
	"github.com/doorbell/intercom/callengine/rtc"
	"github.com/doorbell/intercom/device"
)

// caller wraps the classic engine: a ring also rings MatrixRTC, a hangup
// also leaves its calls, and the status the device follows (ringer,
// notices, door) is the two merged.
func (m *matrixRTC) caller(inner device.Caller) device.Caller {
	if m == nil {
		return inner
	}
	return rtcCaller{inner: inner, m: m}
}

type rtcCaller struct {
	inner device.Caller
	m     *matrixRTC
}

func (c rtcCaller) Ring(ctx context.Context, residents []callengine.Resident) error {
	if c.m.Status().Phase != rtc.PhaseIdle {
		return callengine.ErrBusy
	}
	err := c.inner.Ring(ctx, residents)
	if !errors.Is(err, callengine.ErrBusy) {
		c.m.ring(residents) // also when classic calls could not start
	}
	return err
}

func (c rtcCaller) Hangup() {
	c.m.push(rtcItem{ev: rtc.HangupRequested{}})
	c.inner.Hangup()
}

func (c rtcCaller) Status() callengine.Status { return mergeRTC(c.inner.Status(), c.m.Status()) }

// Subscribe merges the engine's updates with MatrixRTC's changes. The
// forwarding goroutine ends with the returned cancel.
func (c rtcCaller) Subscribe() (<-chan callengine.Status, func()) {
	inner, cancelInner := c.inner.Subscribe()
	changed, cancelChanged := c.m.changed.subscribe()
	out := make(chan callengine.Status, 8)
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		defer cancelInner()
		defer cancelChanged()
		last := c.inner.Status()
		for {
			select {
			case <-ctx.Done():
				return
			case st := <-inner:
				last = st
			case <-changed:
			}
			select {
			case out <- mergeRTC(last, c.m.Status()):
			case <-ctx.Done():
				return
			}
		}
	}()
	return out, cancel
}

// mergeRTC adds the MatrixRTC calls to the engine's status as call legs
// (so the notices see an answer and the door sees a connected call) and
// takes the more advanced phase of the two.
func mergeRTC(st callengine.Status, r rtc.Status) callengine.Status {
	out := st
	out.Calls = slices.Clone(st.Calls)
	for _, room := range r.Rooms {
		leg := callengine.CallStatus{CallID: callengine.CallID("matrixrtc:" + string(room.Room)), Room: room.Room,
			State: callengine.LegRinging, Since: r.Since, Direction: "outbound"}
		if room.Answered {
			leg.State = callengine.LegConnected
			leg.Resident = callengine.UserID(userOfIdentity(r.AnsweredBy))
		}
		out.Calls = append(out.Calls, leg)
	}
	rank := map[callengine.Phase]int{callengine.PhaseIdle: 0, callengine.PhaseRinging: 1, callengine.PhaseInCall: 2}
	rp := callengine.Phase(r.Phase) // the phases share their names
	if rank[rp] > rank[st.Phase] || (rank[rp] == rank[st.Phase] && r.Since.After(st.Since)) {
		out.Phase, out.Since = rp, r.Since
	}
	return out
}

// userOfIdentity takes the user from a "<user>:<device>" identity.
func userOfIdentity(identity string) string {
	if i := strings.LastIndexByte(identity, ':'); i > 0 {
		return identity[:i]
	}
	return identity
}

// reporter adds MatrixRTC to the matrix section of the status.
func (m *matrixRTC) reporter(inner device.Reporter) device.Reporter {
	if m == nil {
		return inner
	}
	return rtcReporter{Reporter: inner, m: m}
}

type rtcReporter struct {
	device.Reporter
	m *matrixRTC
}

func (r rtcReporter) Report() any {
	return map[string]any{"session": r.Reporter.Report(), "matrixrtc": r.m.Status()}
}
