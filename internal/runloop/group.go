package runloop

import (
	"context"
	"sync"
)

// Group tracks helper goroutines a loop starts and does not wait for at
// once (closing a peer, preparing one, a send that may be slow), so that
// every goroutine has an owner that waits for it before returning, and a
// shutdown really is one. Unlike errgroup, the helpers report no error:
// their outcome comes back to the loop through its Queue. Make one with
// NewGroup.
type Group struct {
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// NewGroup returns a Group whose goroutines get a context derived from
// ctx. The owner ends the group with Stop, which also releases that
// context.
func NewGroup(ctx context.Context) *Group {
	ctx, cancel := context.WithCancel(ctx)
	return &Group{ctx: ctx, cancel: cancel}
}

// Go runs f on a new goroutine with the group's context. Call it from the
// owner or from one of the group's goroutines, not after Wait has
// returned for good.
func (g *Group) Go(f func(ctx context.Context)) {
	g.wg.Go(func() { f(g.ctx) })
}

// Wait returns once every goroutine started with Go has returned, for an
// owner that must wait without cancelling them (it still calls Stop at the
// end).
func (g *Group) Wait() { g.wg.Wait() }

// Stop cancels the group's context and waits for its goroutines.
func (g *Group) Stop() {
	g.cancel()
	g.wg.Wait()
}
