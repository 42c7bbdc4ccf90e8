package daemon

import (
	"context"
	"sync/atomic"

	"github.com/doorbell/intercom/callengine"
	"github.com/doorbell/intercom/device"
)

// ringsFirst holds the ring notices and their snapshot until the press's
// MatrixRTC rings have left (rtc.Runner.RingsOut: at most
// rtc.RingsOutMax). A homeserver takes each room's events one after
// another (Dendrite's room server queues them per room), and a notice and
// a snapshot sent into a resident's room at the press went ahead of the
// intercom's call membership there and so of its ring: 100–200 ms of the
// 250–600 ms the ring took (issue 18). The notices are a fallback a
// resident reads after the phone rang; the ring is what must be quick.
// The classic invites leave before either: the ring coordinator rings
// that path first.
type ringsFirst struct {
	out atomic.Pointer[func() <-chan struct{}] // nil until MatrixRTC exists, and without it
}

// follow makes the gate wait for out (the MatrixRTC runner's RingsOut).
func (g *ringsFirst) follow(out func() <-chan struct{}) { g.out.Store(&out) }

// wait returns once no MatrixRTC ring is on its way, or ctx ends.
func (g *ringsFirst) wait(ctx context.Context) {
	if g == nil {
		return
	}
	out := g.out.Load()
	if out == nil {
		return
	}
	select {
	case <-(*out)():
	case <-ctx.Done():
	}
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
