package daemon

import (
	"context"
	"errors"
	"strings"

	"github.com/doorbell/intercom/callengine"
	"github.com/doorbell/intercom/callengine/rtc"
)

// errNoRTCRooms: every room is encrypted (left to classic calls) or none
// is known, so MatrixRTC has nothing to ring.
var errNoRTCRooms = errors.New("matrixrtc: no unencrypted room to ring")

// The MatrixRTC runner is the matrixrtc path's ring.Line.

// Ring rings the residents' unencrypted rooms (and the household room).
func (m *matrixRTC) Ring(_ context.Context, residents []callengine.Resident) error {
	if !m.ring(residents) {
		return errNoRTCRooms
	}
	return nil
}

// Withdraw: the ring was answered on another path.
func (m *matrixRTC) Withdraw() { m.push(rtcItem{ev: rtc.AnsweredElsewhere{}}) }

// Hangup leaves every MatrixRTC call.
func (m *matrixRTC) Hangup() { m.push(rtcItem{ev: rtc.HangupRequested{}}) }

// Status is the MatrixRTC calls as the ring sees them: each rung room a
// call leg, connected once a resident joined it.
func (m *matrixRTC) Status() callengine.Status { return ringStatus(m.machineStatus()) }

// Subscribe delivers the ring's view of every change.
func (m *matrixRTC) Subscribe() (<-chan callengine.Status, func()) { return m.changed.subscribe() }

// ringStatus maps the MatrixRTC machine's status onto call legs (so the
// notices see an answer and the door sees a connected call).
func ringStatus(r rtc.Status) callengine.Status {
	out := callengine.Status{Phase: callengine.Phase(r.Phase), Since: r.Since, Calls: []callengine.CallStatus{}}
	if r.Phase == "" {
		out.Phase = callengine.PhaseIdle
	}
	for _, room := range r.Rooms {
		leg := callengine.CallStatus{CallID: callengine.CallID("matrixrtc:" + string(room.Room)), Room: room.Room,
			State: callengine.LegRinging, Since: r.Since, Direction: "outbound"}
		if room.Answered {
			leg.State = callengine.LegConnected
			leg.Resident = callengine.UserID(userOfIdentity(r.AnsweredBy))
		}
		out.Calls = append(out.Calls, leg)
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

// rtcStatus is the MatrixRTC machine's last status; nil with MatrixRTC
// off.
func (m *matrixRTC) rtcStatus() *rtc.Status {
	if m == nil {
		return nil
	}
	st := m.machineStatus()
	return &st
}
