package gpio

import (
	"context"
	"errors"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	pgpio "periph.io/x/conn/v3/gpio"
	"periph.io/x/conn/v3/gpio/gpiotest"

	"github.com/doorbell/intercom/gpio/gpiofake"
)

// A halt whose first writes fail is retried, with backoff, until the pin is
// off; the relay says energised until then.
func TestRelayHaltRetriesFailingWrites(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		pin := gpiofake.NewFlakyPin("RELAY", pgpio.High) // energised by whatever ran before us
		pin.Set(3, 0)
		start := time.Now()
		r, err := NewRelay(pin, ActiveHigh)
		if err != nil {
			t.Fatalf("NewRelay gave up on a pin that fails 3 writes: %v", err)
		}
		if pin.Read() != pgpio.Low || r.Energised() {
			t.Fatal("relay not off after the retries")
		}
		if pin.Writes() != 4 {
			t.Errorf("%d writes, want 3 failed and 1 good", pin.Writes())
		}
		if d := time.Since(start); d <= 0 || d > time.Second {
			t.Errorf("retries took %v: want a short backoff", d)
		}
	})
}

// A write the driver accepted but the pin did not take is caught by reading
// the pin back.
func TestRelayHaltReadsBack(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		pin := gpiofake.NewFlakyPin("RELAY", pgpio.Low)
		pin.Set(0, 2)
		r, err := NewRelay(pin, ActiveLow) // Low is on for an active-low board
		if err != nil {
			t.Fatal(err)
		}
		if pin.Read() != pgpio.High || r.Energised() {
			t.Fatal("halt trusted a write the pin never took")
		}
	})
}

// A pin that cannot be driven off is retried for a bounded time; Halt then
// says so, and the relay reports energised, which it is.
func TestRelayHaltGivesUpOnlyAfterRetries(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		pin := gpiofake.NewFlakyPin("RELAY", pgpio.Low)
		r, err := NewRelay(pin, ActiveHigh)
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(t.Context())
		go func() {
			time.Sleep(time.Second)
			pin.Set(-1, 0) // the driver dies mid-pulse
			cancel()
		}()
		start := time.Now()
		err = r.Pulse(ctx, 5*time.Second)
		if !errors.Is(err, ErrStillEnergised) || !errors.Is(err, gpiofake.ErrWrite) {
			t.Fatalf("pulse error %v, want ErrStillEnergised wrapping the pin's", err)
		}
		if errors.Is(err, ErrNotEnergised) {
			t.Errorf("pulse error %v says the relay never came on", err)
		}
		if !r.Energised() || pin.Read() != pgpio.High {
			t.Fatal("relay reports off while its pin is still on")
		}
		if pin.Writes() < haltAttempts+1 {
			t.Errorf("%d writes: halt not retried %d times", pin.Writes(), haltAttempts)
		}
		if d := time.Since(start) - time.Second; d <= 0 || d > 3*time.Second {
			t.Errorf("halt retried for %v, want a bounded backoff", d)
		}
		pin.Set(0, 0)
		if err := r.Halt(); err != nil || r.Energised() || pin.Read() != pgpio.Low {
			t.Fatalf("halt after the pin recovered: %v, energised %v", err, r.Energised())
		}
	})
}

// A pulse whose energising write fails says the door was not opened, and
// leaves the relay off.
func TestRelayPulseNotEnergised(t *testing.T) {
	for _, tc := range []struct {
		name       string
		fail, lose int
	}{
		{"write fails", 1, 0},
		{"write lost", 0, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				pin := gpiofake.NewFlakyPin("RELAY", pgpio.Low)
				r, err := NewRelay(pin, ActiveHigh)
				if err != nil {
					t.Fatal(err)
				}
				pin.Set(tc.fail, tc.lose)
				err = r.Pulse(t.Context(), time.Second)
				if !errors.Is(err, ErrNotEnergised) || errors.Is(err, ErrStillEnergised) {
					t.Fatalf("pulse error %v, want ErrNotEnergised only", err)
				}
				if r.Energised() || pin.Read() != pgpio.Low {
					t.Fatal("relay left on")
				}
			})
		})
	}
}

// stuckCtx stands for a pulsing goroutine that is never scheduled again:
// its Done blocks until the test releases it.
type stuckCtx struct {
	context.Context
	release chan struct{}
}

func (c stuckCtx) Done() <-chan struct{} {
	<-c.release
	return c.Context.Done()
}

// The watchdog retries too: with the pulsing goroutine stuck and the first
// writes of the halt failing, the strike is still released just after the
// cap.
func TestRelayWatchdogRetriesHalt(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		pin := gpiofake.NewFlakyPin("RELAY", pgpio.Low)
		r, err := NewRelay(pin, ActiveHigh)
		if err != nil {
			t.Fatal(err)
		}
		ctx := stuckCtx{Context: t.Context(), release: make(chan struct{})}
		release := sync.OnceFunc(func() { close(ctx.release) })
		defer release() // also when the test fails, or the bubble deadlocks
		done := make(chan error, 1)
		go func() { done <- r.Pulse(ctx, 2*time.Second) }()
		synctest.Wait()
		if !r.Energised() {
			t.Fatal("not energised")
		}
		pin.Set(2, 0)
		time.Sleep(2*time.Second + watchdogSlack + time.Second)
		synctest.Wait()
		if r.Energised() || pin.Read() != pgpio.Low {
			t.Fatal("watchdog gave up after a failed write")
		}
		release()
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	})
}

// readPanicsPin is a pin whose Read must never be called on an output:
// periph's gpioioctl (and bcm283x without /dev/gpiomem) read a line by
// turning it into an input with a pull-up, which on an active-high relay
// board energises the strike.
type readPanicsPin struct{ *gpiotest.Pin }

func (readPanicsPin) Read() pgpio.Level { panic("Read on a relay output") }

func TestRelayNeverReadsAnOutputThroughPinIn(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		pin := readPanicsPin{SimPin("RELAY")}
		r, err := NewRelay(pin, ActiveHigh)
		if err != nil {
			t.Fatal(err)
		}
		if err := r.Pulse(t.Context(), time.Second); err != nil {
			t.Fatal(err)
		}
		if err := r.Halt(); err != nil {
			t.Fatal(err)
		}
	})
}
