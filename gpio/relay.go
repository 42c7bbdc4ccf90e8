package gpio

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	pgpio "periph.io/x/conn/v3/gpio"
	"periph.io/x/conn/v3/gpio/gpiotest"
)

// MaxPulse is the hard ceiling on one door-relay pulse, whatever the
// configuration says: a strike left energised overheats and leaves the door
// open.
const MaxPulse = 30 * time.Second

// watchdogSlack is how long after a pulse's end the watchdog steps in when
// the pulsing goroutine has not.
const watchdogSlack = 100 * time.Millisecond

// Halt drives the pin off up to haltAttempts times, waiting haltBackoff
// after the first failure and twice as long after each further one (at most
// haltMaxBackoff): about 1.1 s in all, short enough for the stop paths that
// call it, long enough to ride out a driver that fails a few writes.
const (
	haltAttempts   = 8
	haltBackoff    = 10 * time.Millisecond
	haltMaxBackoff = 500 * time.Millisecond
)

// OutputReader is an output pin that can report the level it holds without
// being reconfigured. The relay reads its pin back only through it (or
// periph's own fake, gpiotest.Pin): periph's PinIn.Read is no such thing,
// as gpioioctl (and bcm283x without /dev/gpiomem) read a line by turning it
// into an input with a pull-up (host v3.8.5, gpioioctl.GPIOLine.Read), which
// on an active-high relay board would energise the strike. Without it, a
// write the driver reports done is taken as done.
type OutputReader interface {
	OutputLevel() pgpio.Level
}

// Relay drives the door strike. It is de-energised when created, by Halt,
// and at the end of every pulse, including when the pulse's context ends
// early.
type Relay struct {
	pin      pgpio.PinOut
	polarity Polarity
	read     func() pgpio.Level // nil: the pin cannot be read back safely

	mu        sync.Mutex
	energised bool   // on, or not known to be off
	pulses    uint64 // generation: a late watchdog never ends a newer pulse
}

// NewRelay returns a relay on pin, driven off at once.
func NewRelay(pin pgpio.PinOut, polarity Polarity) (*Relay, error) {
	r := &Relay{pin: pin, polarity: polarity, read: readBack(pin), energised: true}
	if err := r.Halt(); err != nil {
		return nil, err
	}
	return r, nil
}

// readBack returns how to read the level pin holds, or nil when that cannot
// be done without disturbing it (see OutputReader).
func readBack(pin pgpio.PinOut) func() pgpio.Level {
	switch p := pin.(type) {
	case OutputReader:
		return p.OutputLevel
	case *gpiotest.Pin:
		// periph's fake (the sim backend) reads back the level last written.
		return p.Read
	}
	return nil
}

// Halt de-energises the relay. It is the documented safe state (periph.io's
// conn.Resource.Halt) and is called at start, on exit and on every error
// path. A write that fails, or that the pin read back did not take, is
// retried with backoff (haltAttempts); the error then wraps
// ErrStillEnergised and the relay reports itself energised.
func (r *Relay) Halt() error {
	return r.halt(func() bool { return true })
}

// halt is Halt while mine reports true: the watchdog stops retrying once a
// newer pulse has begun, as that pulse ends itself.
func (r *Relay) halt(mine func() bool) error {
	var err error
	wait := haltBackoff
	for attempt := 1; ; attempt++ {
		if err = r.haltOnce(); err == nil {
			return nil
		}
		if attempt == haltAttempts || !mine() {
			break
		}
		time.Sleep(wait)
		wait = min(2*wait, haltMaxBackoff)
	}
	return fmt.Errorf("de-energise relay %s: %w (%w)", r.pin, err, ErrStillEnergised)
}

// haltOnce drives the pin off once and sets the energised flag to what is
// known of the pin afterwards.
func (r *Relay) haltOnce() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if err := r.pin.Out(r.polarity.level(false)); err != nil {
		// The pin may or may not have changed: not known to be off.
		r.energised = r.read == nil || r.polarity.on(r.read())
		return err
	}
	if r.read != nil {
		if l := r.read(); r.polarity.on(l) {
			r.energised = true
			return fmt.Errorf("pin reads %v after being driven off", l)
		}
	}
	r.energised = false
	return nil
}

// Energised reports whether the relay is on, or may be: it is false only
// once the pin was driven off (and, where it can be read back, reads off).
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
//
// A nil error means the strike was energised and released. Otherwise the
// error wraps ErrNotEnergised when the strike was never energised (the door
// did not open), ErrStillEnergised when it could not be released, or both.
func (r *Relay) Pulse(ctx context.Context, d time.Duration) (err error) {
	if d <= 0 {
		return fmt.Errorf("relay pulse of %v: %w", d, ErrNotEnergised)
	}
	d = min(d, MaxPulse)
	r.mu.Lock()
	r.pulses++
	gen := r.pulses
	r.mu.Unlock()
	mine := func() bool {
		r.mu.Lock()
		defer r.mu.Unlock()
		return r.pulses == gen
	}
	watchdog := time.AfterFunc(d+watchdogSlack, func() {
		if mine() {
			_ = r.halt(mine)
		}
	})
	defer func() {
		watchdog.Stop()
		if herr := r.Halt(); herr != nil {
			err = errors.Join(err, herr)
		}
	}()
	if err := r.energise(); err != nil {
		return err
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
	return nil
}

// energise drives the pin on once. A failed write is not retried: the
// door stays shut and the resident is told, rather than opened late.
func (r *Relay) energise() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if err := r.pin.Out(r.polarity.level(true)); err != nil {
		// Not known to be off until the halt that follows.
		r.energised = r.read == nil || r.polarity.on(r.read())
		return fmt.Errorf("energise relay %s: %w (%w)", r.pin, err, ErrNotEnergised)
	}
	r.energised = true
	if r.read != nil {
		if l := r.read(); !r.polarity.on(l) {
			r.energised = false
			return fmt.Errorf("energise relay %s: pin reads %v after being driven on (%w)", r.pin, l, ErrNotEnergised)
		}
	}
	return nil
}
