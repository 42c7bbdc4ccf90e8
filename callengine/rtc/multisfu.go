package rtc

import (
	"context"
	"io"
	"maps"
	"slices"
	"strings"

	"github.com/doorbell/intercom/callengine"
)

// Multi-SFU calls (matrix-voip.md §5.1, §9): Element Call's default
// focus selection is "multi_sfu", where each member publishes on its own
// homeserver's transport (its foci_preferred[0]) and subscribes to every
// other member's. The intercom publishes its camera and microphone on its
// own SFU only, encoded and encrypted once; for each other transport a
// member of a rung room publishes on, it opens a subscribe-only
// connection there to hear them (and to see them arrive: presence counts
// at any of the call's SFUs). Two transports are the same when their
// service URLs are equal, as Element Call compares them.

// JoinRemoteSFU: connect, subscribe only, to the SFU behind ServiceURL
// for Room's call; report RemoteSFUChanged and ParticipantChanged.
type JoinRemoteSFU struct {
	Room       callengine.RoomID
	ServiceURL string
}

// LeaveRemoteSFU: disconnect from that SFU.
type LeaveRemoteSFU struct {
	Room       callengine.RoomID
	ServiceURL string
}

func (JoinRemoteSFU) effect()  {}
func (LeaveRemoteSFU) effect() {}

// RemoteSFUChanged: a subscribe-only connection came up, failed or ended.
type RemoteSFUChanged struct {
	Room       callengine.RoomID
	ServiceURL string
	Connected  bool
	Err        error
}

func (RemoteSFUChanged) event() {}

// sameTransport compares service URLs as Element Call does (string
// equality), forgiving a trailing slash.
func sameTransport(a, b string) bool { return strings.TrimRight(a, "/") == strings.TrimRight(b, "/") }

// followTransports joins the SFUs room's members publish on that are not
// the intercom's own, and leaves those nobody publishes on any more.
func (m *Machine) followTransports(room callengine.RoomID, l *leg) []Effect {
	want := map[string]bool{}
	for _, mem := range l.members {
		if mem.ServiceURL != "" && !sameTransport(mem.ServiceURL, m.cfg.ServiceURL) {
			want[strings.TrimRight(mem.ServiceURL, "/")] = true
		}
	}
	var out []Effect
	for _, u := range slices.Sorted(maps.Keys(l.remote)) {
		if !want[u] {
			delete(l.remote, u)
			out = append(out, LeaveRemoteSFU{Room: room, ServiceURL: u})
		}
	}
	for _, u := range slices.Sorted(maps.Keys(want)) {
		if !l.remote[u] {
			if l.remote == nil {
				l.remote = map[string]bool{}
			}
			l.remote[u] = true
			out = append(out, JoinRemoteSFU{Room: room, ServiceURL: u})
		}
	}
	return out
}

// remoteSFU follows a subscribe-only connection. One that fails is
// forgotten, so the next change of members tries again; meanwhile the
// presence rule judges the resident who publishes there.
func (m *Machine) remoteSFU(e RemoteSFUChanged) []Effect {
	l := m.legs[e.Room]
	if l == nil || e.Connected {
		return nil
	}
	if !l.remote[e.ServiceURL] {
		return nil
	}
	delete(l.remote, e.ServiceURL)
	reason := "connection ended"
	if e.Err != nil {
		reason = e.Err.Error()
	}
	// The runner lets go of what is left of the connection.
	out := []Effect{LeaveRemoteSFU{Room: e.Room, ServiceURL: e.ServiceURL},
		Ignored{Room: e.Room, What: "SFU at " + e.ServiceURL, Reason: reason}}
	// Whoever was seen only there is no longer seen.
	for id, mem := range l.members {
		if sameTransport(mem.ServiceURL, e.ServiceURL) {
			delete(l.present, id)
			for _, other := range l.identities[id] {
				delete(l.present, other)
			}
		}
	}
	if l.answered && !m.anyMemberPresent(l) {
		out = append(out, StartTimer{ID: TimerID{Kind: TimerPresence, Room: e.Room}, After: m.cfg.PresenceGrace})
	}
	return out
}

// leaveRemotes leaves every remote SFU of a room being left.
func leaveRemotes(room callengine.RoomID, l *leg) []Effect {
	var out []Effect
	for _, u := range slices.Sorted(maps.Keys(l.remote)) {
		out = append(out, LeaveRemoteSFU{Room: room, ServiceURL: u})
	}
	return out
}

// remoteKey names one subscribe-only connection in the runner.
type remoteKey struct {
	room callengine.RoomID
	url  string
}

// joinRemote connects to another member's SFU to listen; the outcome,
// presence and loss come back through the inbox.
func (l *loop) joinRemote(ctx context.Context, join uint64, room callengine.RoomID, serviceURL string, keys *CallKeys) {
	l.connect(join, room, "SFU at "+serviceURL,
		func(presence func(string, bool), lost func(error)) (io.Closer, error) {
			return l.r.sfu.Subscribe(ctx, room, serviceURL, keys, presence, lost)
		},
		func(connected bool, err error) Event {
			return RemoteSFUChanged{Room: room, ServiceURL: serviceURL, Connected: connected, Err: err}
		})
}
