package gpio

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	pgpio "periph.io/x/conn/v3/gpio"
)

// DefaultDebounce is how long a released button's level must hold still
// before the release counts. Mechanical bell pushes bounce for 1–20 ms;
// 50 ms also rides out the slow edges of a long cable run.
const DefaultDebounce = 50 * time.Millisecond

// pressHoldDivisor sets how long the line must hold down for a press to
// count: the debounce time divided by it (10 ms by default). A press is
// what the visitor waits on, and every millisecond here is a millisecond
// before the ring: a whole debounce time of 50 ms used to be (issue 18,
// press → ring ≤ 60 ms). Ten milliseconds of a steady level still refuses
// what is not a finger: the microsecond spikes a door strike's coil or a
// long cable picks up. The release keeps the whole debounce time, so a
// bounce train that shows a steady level for a moment in its middle is
// still one press: once pressed, only a long steady release ends it.
const pressHoldDivisor = 5

// edgeWait bounds every WaitForEdge call. periph.io host's gpioioctl driver
// reads 0 as "wait forever" and -1 as "do not wait", the reverse of the
// gpio.PinIn documentation and of gpiotest, so neither is ever passed: an
// explicit, finite timeout means the same on every backend, and Run notices
// a cancelled context within edgeWait even if Halt raced the wait.
const edgeWait = time.Second

// Button turns the edges of a bell push on an input pin into presses. A
// press counts once the line has held down for a fifth of the debounce
// time, a release once it has held up for the whole debounce time, so a
// bounce train is one press, and a button held down is one press, not one
// per bounce or per second. A button already down when Run starts (a stuck
// push, a shorted cable) is not a press until it has been released.
type Button struct {
	pin       pgpio.PinIn
	polarity  Polarity
	debounce  time.Duration // the release's hold
	pressHold time.Duration
	log       *slog.Logger

	mu      sync.Mutex
	pressed bool // debounced state
	presses uint64

	// beat is when Run last came back from the pin (Heartbeat).
	beat atomic.Pointer[time.Time]
}

// NewButton configures pin as an input with edge detection on both edges
// and the pull resistor that holds it released: pull-up for an active-low
// button (the push shorts the pin to ground, the usual wiring), pull-down
// for an active-high one. debounce ≤ 0 takes DefaultDebounce.
func NewButton(pin pgpio.PinIn, polarity Polarity, debounce time.Duration, log *slog.Logger) (*Button, error) {
	if debounce <= 0 {
		debounce = DefaultDebounce
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	pull := pgpio.PullDown
	if polarity == ActiveLow {
		pull = pgpio.PullUp
	}
	if err := pin.In(pull, pgpio.BothEdges); err != nil {
		return nil, fmt.Errorf("configure button %s: %w", pin, err)
	}
	// pressHold is never 0: gpioioctl reads a wait of 0 as "forever".
	btn := &Button{pin: pin, polarity: polarity, debounce: debounce, pressHold: max(debounce/pressHoldDivisor, 1), log: log}
	btn.alive()
	return btn, nil
}

// Pressed reports the debounced state.
func (b *Button) Pressed() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.pressed
}

// Presses returns how many presses Run has reported.
func (b *Button) Presses() uint64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.presses
}

// Heartbeat is when Run last came back from waiting on the pin: at least
// every second while it runs (edgeWait, a hold time while settling),
// unless it is stuck, in a press callback that does not return or in a
// driver whose wait never ends. The systemd watchdog reads it.
func (b *Button) Heartbeat() time.Time {
	if t := b.beat.Load(); t != nil {
		return *t
	}
	return time.Time{}
}

func (b *Button) alive() {
	now := time.Now() // with its monotonic reading: a stepped clock is no stall
	b.beat.Store(&now)
}

// Run owns the pin until ctx is done and calls press once for every
// debounced press, on Run's goroutine; press must not block for long.
func (b *Button) Run(ctx context.Context, press func()) error {
	// Halt interrupts a pending WaitForEdge on the character device; the
	// bounded wait covers backends whose Halt does nothing (gpiotest) and a
	// Halt that lands between the context check and the next wait.
	stop := context.AfterFunc(ctx, func() { _ = b.pin.Halt() })
	defer stop()

	b.mu.Lock()
	b.pressed = b.polarity.on(b.pin.Read())
	stuck := b.pressed
	b.mu.Unlock()
	if stuck {
		b.log.Warn("button is down at start; waiting for its release", "pin", b.pin.String())
	}
	for ctx.Err() == nil {
		b.alive()
		if !b.pin.WaitForEdge(edgeWait) {
			continue
		}
		// Something moved: wait until the line has been quiet for the
		// hold of the change it could be (a press from released, a
		// release from pressed), restarting the wait on every further
		// edge. Only this goroutine writes pressed.
		b.mu.Lock()
		hold := b.pressHold
		if b.pressed {
			hold = b.debounce
		}
		b.mu.Unlock()
		if !b.settle(ctx, hold) {
			return nil
		}
		down := b.polarity.on(b.pin.Read())
		b.mu.Lock()
		was := b.pressed
		b.pressed = down
		if down && !was {
			b.presses++
		}
		b.mu.Unlock()
		if down && !was {
			b.log.Debug("button pressed", "pin", b.pin.String())
			press()
		}
	}
	return nil
}

// settle returns once no edge has come for hold, or false when ctx ends
// first.
func (b *Button) settle(ctx context.Context, hold time.Duration) bool {
	for ctx.Err() == nil {
		b.alive()
		if !b.pin.WaitForEdge(hold) {
			return ctx.Err() == nil
		}
	}
	return false
}
