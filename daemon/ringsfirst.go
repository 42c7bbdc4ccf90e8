package daemon

import (
	"context"
	"sync/atomic"

	"github.com/doorbell/intercom/callengine"
	"github.com/doorbell/intercom/device"
)

// ringsFirst holds what the press sends into the residents' rooms besides
// the MatrixRTC rings until those rings have left (rtc.Runner: at most
// rtc.RingsOutMax). A homeserver takes each room's events one after
// another (Dendrite's room server queues them per room), so anything
// sent into a resident's room at the press goes ahead of the intercom's
// call membership there and so of its ring, which must reference the
// membership and can only follow it (issue 18):
//   - the ring notices and their snapshot wait for every room's ring
//     (RingsOut): they cost 100–200 ms of a ring that took 250–600 ms;
//     they are a fallback a resident reads after the phone rang;
//   - a classic invite waits for its own room's ring only (RingOut), so a
//     resident rung both ways gets the invite after the ring (about one
//     homeserver round trip later) and a room rung only with classic
//     calls does not wait at all. The ring coordinator rings MatrixRTC
//     first, so the room's ring is registered before the invite is made.
type ringsFirst struct {
	out atomic.Pointer[ringsOut] // nil until MatrixRTC exists, and without it
}

// ringsOut is what the gate follows: the MatrixRTC runner.
type ringsOut interface {
	RingsOut() <-chan struct{}
	RingOut(room callengine.RoomID) <-chan struct{}
}

// follow makes the gate wait for r's rings.
func (g *ringsFirst) follow(r ringsOut) { g.out.Store(&r) }

// wait returns once no MatrixRTC ring is on its way, or ctx ends.
func (g *ringsFirst) wait(ctx context.Context) {
	g.waitFor(ctx, func(r ringsOut) <-chan struct{} { return r.RingsOut() })
}

// waitRoom returns once room's MatrixRTC ring is not on its way, or ctx
// ends.
func (g *ringsFirst) waitRoom(ctx context.Context, room callengine.RoomID) {
	g.waitFor(ctx, func(r ringsOut) <-chan struct{} { return r.RingOut(room) })
}

func (g *ringsFirst) waitFor(ctx context.Context, ch func(ringsOut) <-chan struct{}) {
	if g == nil {
		return
	}
	r := g.out.Load()
	if r == nil {
		return
	}
	select {
	case <-ch(*r):
	case <-ctx.Done():
	}
}

// transport is the classic engine's t with each invite held until its
// room's MatrixRTC ring has left. The call's later events follow the
// invite on the engine's ordered outbox.
func (g *ringsFirst) transport(t callengine.Transport) callengine.Transport {
	if g == nil {
		return t
	}
	return gatedTransport{t: t, g: g}
}

type gatedTransport struct {
	t callengine.Transport
	g *ringsFirst
}

func (t gatedTransport) SendRoomEvent(ctx context.Context, room callengine.RoomID, eventType string, content any) error {
	if eventType == callengine.TypeInvite {
		t.g.waitRoom(ctx, room)
	}
	return t.t.SendRoomEvent(ctx, room, eventType, content)
}

// messenger is m with every post held by the gate.
func (g *ringsFirst) messenger(m device.Messenger) device.Messenger {
	if g == nil {
		return m
	}
	return gatedMessenger{m: m, g: g}
}

// snapshotter is s with every snapshot held by the gate (its JPEG
// encoding is a burst of CPU the homeserver on a small box shares).
func (g *ringsFirst) snapshotter(s device.Snapshotter) device.Snapshotter {
	if g == nil || s == nil {
		return s
	}
	return gatedSnapshot{s: s, g: g}
}

type gatedMessenger struct {
	m device.Messenger
	g *ringsFirst
}

func (m gatedMessenger) SendText(ctx context.Context, room callengine.RoomID, text string, notify bool) (string, error) {
	m.g.wait(ctx)
	return m.m.SendText(ctx, room, text, notify)
}

func (m gatedMessenger) SendJPEG(ctx context.Context, room callengine.RoomID, body, name string, jpeg []byte) (string, error) {
	m.g.wait(ctx)
	return m.m.SendJPEG(ctx, room, body, name, jpeg)
}

type gatedSnapshot struct {
	s device.Snapshotter
	g *ringsFirst
}

func (s gatedSnapshot) Snapshot(ctx context.Context) ([]byte, error) {
	s.g.wait(ctx)
	return s.s.Snapshot(ctx)
}
