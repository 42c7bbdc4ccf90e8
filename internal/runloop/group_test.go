package runloop

import (
	"context"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"
)

func TestGroupWait(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		g := NewGroup(t.Context())
		var done atomic.Int32
		for _, d := range []time.Duration{time.Second, 5 * time.Second, 0} {
			g.Go(func(context.Context) {
				time.Sleep(d)
				done.Add(1)
			})
		}
		// A helper may start another; the owner's Wait covers it.
		g.Go(func(context.Context) {
			g.Go(func(context.Context) { time.Sleep(7 * time.Second); done.Add(1) })
		})
		defer g.Stop()
		start := time.Now()
		g.Wait()
		if n := done.Load(); n != 4 {
			t.Errorf("Wait returned with %d of 4 helpers done", n)
		}
		if took := time.Since(start); took != 7*time.Second {
			t.Errorf("Wait took %v, want 7s", took)
		}
	})
}

func TestGroupStop(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		parent, cancelParent := context.WithCancel(t.Context())
		defer cancelParent()
		g := NewGroup(parent)
		var stopped atomic.Bool
		g.Go(func(ctx context.Context) {
			<-ctx.Done()
			stopped.Store(true)
		})
		synctest.Wait()
		if stopped.Load() {
			t.Fatal("helper stopped before Stop")
		}
		g.Stop()
		if !stopped.Load() {
			t.Fatal("Stop returned before the helper did")
		}
		if parent.Err() != nil {
			t.Error("Stop cancelled the parent context")
		}
	})
}

// Cancelling the parent reaches the helpers too.
func TestGroupParentCancel(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		parent, cancel := context.WithCancel(t.Context())
		g := NewGroup(parent)
		defer g.Stop()
		g.Go(func(ctx context.Context) { <-ctx.Done() })
		cancel()
		g.Wait()
	})
}
