package gpio

import (
	"context"
	"fmt"
	"sync"
	"time"

	pgpio "periph.io/x/conn/v3/gpio"
)

// MaxPulse is the hard ceiling on one door-relay pulse, whatever the
// configuration says: a strike left energised overheats and leaves the door
// open.
const MaxPulse = 30 * time.Second

// watchdogSlack is how long after a pulse's end the watchdog steps in when
// the pulsing goroutine has not.
const watchdogSlack = 100 * time.Millisecond

// Relay drives the door strike. It is de-energised when created, by Halt,
// and at the end of every pulse, including when the pulse's context ends
// early.
type Relay struct {
	pin      pgpio.PinOut
	polarity Polarity

	mu        sync.Mutex
	energised bool
	pulses    uint64 // generation: a late watchdog never ends a newer pulse
}

// NewRelay returns a relay on pin, driven off at once.
func NewRelay(pin pgpio.PinOut, polarity Polarity) (*Relay, error) {
	r := &Relay{pin: pin, polarity: polarity}
	if err := r.Halt(); err != nil {
		return nil, err
	}
	return r, nil
}

// Halt de-energises the relay. It is the documented safe state (periph.io's
// conn.Resource.Halt) and is called at start, on exit and on every error
// path.
func (r *Relay) Halt() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.energised = false
	if err := r.pin.Out(r.polarity.level(false)); err != nil {
		return fmt.Errorf("de-energise relay %s: %w", r.pin, err)
	}
	return nil
}

// Energised reports whether the relay is on.
func (r *Relay) Energised() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.energised
}

// Pulse energises the relay for d (capped at MaxPulse) and de-energises it
// again before returning, also when ctx ends first and when anything during
// the pulse panics (the caller's context, the pin driver): the strike is
// released while the panic unwinds. A watchdog timer armed before the
// strike is energised releases it at the cap even if the goroutine that
// called Pulse is never scheduled again.
func (r *Relay) Pulse(ctx context.Context, d time.Duration) (err error) {
	if d <= 0 {
		return fmt.Errorf("relay pulse of %v", d)
	}
	d = min(d, MaxPulse)
	r.mu.Lock()
	r.pulses++
	gen := r.pulses
	r.mu.Unlock()
	watchdog := time.AfterFunc(d+watchdogSlack, func() {
		r.mu.Lock()
		mine := r.pulses == gen
		r.mu.Unlock()
		if mine {
			_ = r.Halt()
		}
	})
	defer func() {
		watchdog.Stop()
		if herr := r.Halt(); err == nil {
			err = herr
		}
	}()
	r.mu.Lock()
	if err := r.pin.Out(r.polarity.level(true)); err != nil {
		r.mu.Unlock()
		return fmt.Errorf("energise relay %s: %w", r.pin, err)
	}
	r.energised = true
	r.mu.Unlock()
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
	return nil
}
