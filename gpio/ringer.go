package gpio

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	pgpio "periph.io/x/conn/v3/gpio"
)

// Cadence is a ring pattern: alternating on and off durations, repeated
// while ringing. The default is the UK-style double ring.
type Cadence []time.Duration

// DefaultCadence rings 0.4 s on, 0.2 s off, 0.4 s on, 2 s off.
var DefaultCadence = Cadence{400 * time.Millisecond, 200 * time.Millisecond, 400 * time.Millisecond, 2 * time.Second}

// Ringer sounds a bell output in a cadence while ringing. Run owns the pin;
// Set only records the wish, so callers never block on the hardware.
type Ringer struct {
	pin      pgpio.PinOut
	polarity Polarity
	cadence  Cadence
	log      *slog.Logger

	mu      sync.Mutex
	ringing bool // wanted
	output  bool // what the pin is driven to
	wake    chan struct{}
}

// NewRinger returns a ringer on pin. The pin is driven off at once.
func NewRinger(pin pgpio.PinOut, polarity Polarity, cadence Cadence, log *slog.Logger) (*Ringer, error) {
	if len(cadence) == 0 {
		cadence = DefaultCadence
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	r := &Ringer{pin: pin, polarity: polarity, cadence: cadence, log: log, wake: make(chan struct{}, 1)}
	if err := r.drive(false); err != nil {
		return nil, err
	}
	return r, nil
}

// Set starts or stops ringing. It never blocks.
func (r *Ringer) Set(ringing bool) {
	r.mu.Lock()
	changed := r.ringing != ringing
	r.ringing = ringing
	r.mu.Unlock()
	if changed {
		select {
		case r.wake <- struct{}{}:
		default:
		}
	}
}

// Ringing reports whether the ringer is ringing (the cadence is running).
func (r *Ringer) Ringing() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.ringing
}

// Output reports whether the ringer output is energised right now.
func (r *Ringer) Output() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.output
}

func (r *Ringer) drive(on bool) error {
	if err := r.pin.Out(r.polarity.level(on)); err != nil {
		return fmt.Errorf("drive ringer %s: %w", r.pin, err)
	}
	r.mu.Lock()
	r.output = on
	r.mu.Unlock()
	return nil
}

// Run plays the cadence while ringing until ctx is done; the output is off
// when it returns.
func (r *Ringer) Run(ctx context.Context) error {
	defer func() {
		if err := r.drive(false); err != nil {
			r.log.Error("ringer off", "pin", r.pin.String(), "err", err)
		}
	}()
	step := 0
	var timer *time.Timer
	var tick <-chan time.Time
	for {
		select {
		case <-ctx.Done():
			if timer != nil {
				timer.Stop()
			}
			return nil
		case <-r.wake:
			if timer != nil {
				timer.Stop()
			}
			tick = nil
			step = 0
			if r.Ringing() {
				if err := r.drive(true); err != nil {
					return err
				}
				timer = time.NewTimer(r.cadence[0])
				tick = timer.C
			} else if err := r.drive(false); err != nil {
				return err
			}
		case <-tick:
			step = (step + 1) % len(r.cadence)
			if err := r.drive(step%2 == 0); err != nil {
				return err
			}
			timer.Reset(r.cadence[step])
		}
	}
}
