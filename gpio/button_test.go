package gpio

import (
	"context"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	pgpio "periph.io/x/conn/v3/gpio"
)

// runButton starts a button on a fake pin inside a synctest bubble and
// returns the pin, the press counter and a stop function that waits for Run.
func runButton(t *testing.T, polarity Polarity, setup func(*Button)) (pin interface {
	edge(pgpio.Level, time.Duration)
}, presses *atomic.Int64, stop func()) {
	t.Helper()
	p := SimButtonPin("BUTTON")
	b, err := NewButton(p, polarity, 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	if want := pgpio.PullUp; polarity == ActiveLow && p.P != want {
		t.Fatalf("active-low button pull = %v, want %v", p.P, want)
	}
	if setup != nil {
		setup(b)
	}
	presses = new(atomic.Int64)
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error)
	go func() { done <- b.Run(ctx, func() { presses.Add(1) }) }()
	synctest.Wait()
	return edger{p.EdgesChan}, presses, func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}
}

type edger struct{ ch chan pgpio.Level }

// edge makes the line go to l, then lets d pass.
func (e edger) edge(l pgpio.Level, d time.Duration) {
	e.ch <- l
	synctest.Wait()
	time.Sleep(d)
	synctest.Wait()
}

// bounce makes a contact bounce train ending at level final.
func bounce(e interface {
	edge(pgpio.Level, time.Duration)
}, final pgpio.Level) {
	for i := 0; i < 6; i++ {
		e.edge(final, 2*time.Millisecond)
		e.edge(!final, 3*time.Millisecond)
	}
	e.edge(final, 0)
}

func TestButtonBounceTrainIsOnePress(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		pin, presses, stop := runButton(t, ActiveLow, nil)
		defer stop()
		bounce(pin, pgpio.Low)
		if n := presses.Load(); n != 0 {
			t.Fatalf("%d presses before the level settled", n)
		}
		time.Sleep(DefaultDebounce / pressHoldDivisor)
		synctest.Wait()
		if n := presses.Load(); n != 1 {
			t.Fatalf("bounce train gave %d presses, want 1", n)
		}
		time.Sleep(300 * time.Millisecond)
		bounce(pin, pgpio.High) // release, bouncing too
		time.Sleep(time.Second)
		synctest.Wait()
		if n := presses.Load(); n != 1 {
			t.Fatalf("release counted as a press: %d", n)
		}
		bounce(pin, pgpio.Low)
		time.Sleep(time.Second)
		synctest.Wait()
		if n := presses.Load(); n != 2 {
			t.Fatalf("second press: %d presses, want 2", n)
		}
	})
}

// TestButtonPressAfterPressHold: a clean press counts exactly when the
// line has held down for the press hold (10 ms), not the debounce time
// (50 ms): this is on the path from the visitor's finger to the ring.
func TestButtonPressAfterPressHold(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		pin, presses, stop := runButton(t, ActiveLow, nil)
		defer stop()
		hold := DefaultDebounce / pressHoldDivisor
		if hold != 10*time.Millisecond {
			t.Fatalf("press hold %v, want 10 ms", hold)
		}
		pin.edge(pgpio.Low, hold-time.Microsecond)
		if n := presses.Load(); n != 0 {
			t.Fatalf("%d presses %v after the edge", n, hold-time.Microsecond)
		}
		time.Sleep(time.Microsecond)
		synctest.Wait()
		if n := presses.Load(); n != 1 {
			t.Fatalf("%d presses %v after the edge, want 1", n, hold)
		}
	})
}

// TestButtonQuickTapIsAPress: a brisk 20 ms tap is a press. With the
// whole debounce time as the press's hold (50 ms, before issue 18's
// change) the line was up again when the hold ended, and the visitor's
// press was lost.
func TestButtonQuickTapIsAPress(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		pin, presses, stop := runButton(t, ActiveLow, nil)
		defer stop()
		for i := 1; i <= 3; i++ {
			pin.edge(pgpio.Low, 20*time.Millisecond)
			pin.edge(pgpio.High, time.Second)
			if n := presses.Load(); n != int64(i) {
				t.Fatalf("after %d taps of 20 ms: %d presses", i, n)
			}
		}
	})
}

// TestButtonSpikesAreNoPress: pulses shorter than the press hold on a
// released line (a door strike's coil kicking a long button cable, a
// microsecond spike, a 9 ms glitch) are never a press.
func TestButtonSpikesAreNoPress(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		pin, presses, stop := runButton(t, ActiveLow, nil)
		defer stop()
		for i := 0; i < 50; i++ {
			pin.edge(pgpio.Low, time.Microsecond)
			pin.edge(pgpio.High, 100*time.Millisecond)
			pin.edge(pgpio.Low, 9*time.Millisecond)
			pin.edge(pgpio.High, 100*time.Millisecond)
		}
		if n := presses.Load(); n != 0 {
			t.Fatalf("spikes gave %d presses", n)
		}
	})
}

// TestButtonSlowBounceIsOnePress: bounce trains with a steady stretch
// longer than the press hold inside them, on the press and on the
// release, are still one press: once pressed, only a release that holds
// for the whole debounce time ends it.
func TestButtonSlowBounceIsOnePress(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		pin, presses, stop := runButton(t, ActiveLow, nil)
		defer stop()
		slow := func(final pgpio.Level) {
			pin.edge(final, 2*time.Millisecond)
			pin.edge(!final, 15*time.Millisecond) // steady, the wrong way
			pin.edge(final, 15*time.Millisecond)  // steady, the right way
			pin.edge(!final, 15*time.Millisecond) // and the wrong way again
			pin.edge(final, 0)
		}
		for i := 0; i < 5; i++ {
			slow(pgpio.Low)
			time.Sleep(500 * time.Millisecond)
			slow(pgpio.High)
			time.Sleep(time.Second)
			synctest.Wait()
			if n := presses.Load(); n != int64(i+1) {
				t.Fatalf("after %d slow presses: %d presses", i+1, n)
			}
		}
	})
}

func TestButtonHeldIsOnePress(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		pin, presses, stop := runButton(t, ActiveLow, nil)
		defer stop()
		pin.edge(pgpio.Low, 0)
		// Held for a minute, with a glitch now and then (a loose contact
		// under a visitor's thumb) shorter than the debounce time.
		for i := 0; i < 60; i++ {
			time.Sleep(time.Second)
			pin.edge(pgpio.High, 5*time.Millisecond)
			pin.edge(pgpio.Low, 0)
		}
		time.Sleep(time.Second)
		synctest.Wait()
		if n := presses.Load(); n != 1 {
			t.Fatalf("held button gave %d presses, want 1", n)
		}
	})
}

func TestButtonDownAtStartIsNoPress(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		pin, presses, stop := runButton(t, ActiveHigh, func(b *Button) {
			b.pin.(interface{ Out(pgpio.Level) error }).Out(pgpio.High)
		})
		defer stop()
		time.Sleep(5 * time.Second)
		synctest.Wait()
		if n := presses.Load(); n != 0 {
			t.Fatalf("stuck button gave %d presses", n)
		}
		pin.edge(pgpio.Low, time.Second) // released
		pin.edge(pgpio.High, time.Second)
		if n := presses.Load(); n != 1 {
			t.Fatalf("press after release: %d presses, want 1", n)
		}
	})
}

func TestButtonRunStopsPromptly(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		_, _, stop := runButton(t, ActiveLow, nil)
		start := time.Now()
		stop()
		// gpiotest's Halt does not interrupt a wait: the bounded edge wait
		// is what ends Run there.
		if d := time.Since(start); d > edgeWait {
			t.Fatalf("Run took %v to stop", d)
		}
	})
}

// panicCtx is a caller's context whose Done panics, standing for any bug in
// the caller that unwinds through a pulse.
type panicCtx struct{ context.Context }

func (panicCtx) Done() <-chan struct{} { panic("caller bug") }

func TestRelayOffAfterPanicInCaller(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		pin := SimPin("RELAY")
		r, err := NewRelay(pin, ActiveLow)
		if err != nil {
			t.Fatal(err)
		}
		func() {
			defer func() {
				if recover() == nil {
					t.Fatal("no panic")
				}
			}()
			_ = r.Pulse(panicCtx{t.Context()}, 5*time.Second)
		}()
		if r.Energised() || pin.Read() != pgpio.High {
			t.Fatal("relay left energised after a panic during the pulse")
		}
		// The watchdog of the aborted pulse must not end a later one early.
		start := time.Now()
		if err := r.Pulse(t.Context(), 10*time.Second); err != nil {
			t.Fatal(err)
		}
		if d := time.Since(start); d != 10*time.Second {
			t.Fatalf("second pulse lasted %v", d)
		}
	})
}

// The heartbeat advances at least every edgeWait while the button is idle,
// and stops while a press callback is stuck, so the watchdog can tell.
func TestButtonHeartbeat(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p := SimButtonPin("BUTTON")
		b, err := NewButton(p, ActiveLow, 0, nil)
		if err != nil {
			t.Fatal(err)
		}
		release := make(chan struct{})
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan error)
		go func() { done <- b.Run(ctx, func() { <-release }) }()
		synctest.Wait()
		start := b.Heartbeat()
		time.Sleep(5 * time.Second)
		synctest.Wait()
		if idle := time.Since(b.Heartbeat()); idle > edgeWait {
			t.Fatalf("idle button's heartbeat %v old", idle)
		}
		if !b.Heartbeat().After(start) {
			t.Fatal("heartbeat did not advance while idle")
		}
		// A press whose callback never returns: the heartbeat goes stale.
		p.EdgesChan <- pgpio.Low
		time.Sleep(time.Second)
		synctest.Wait()
		stuck := b.Heartbeat()
		time.Sleep(10 * time.Second)
		synctest.Wait()
		if !b.Heartbeat().Equal(stuck) {
			t.Fatal("heartbeat advanced while the press callback was stuck")
		}
		close(release)
		synctest.Wait()
		if time.Since(b.Heartbeat()) > 0 {
			t.Fatal("heartbeat not renewed once the callback returned")
		}
		cancel()
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	})
}
