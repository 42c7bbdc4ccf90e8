package gpio

import "errors"

// ErrNoPin is returned by Lookup when no registered driver has a pin of
// that name (wrong name, or no GPIO chip on this machine).
var ErrNoPin = errors.New("gpio: no such pin")

// ErrNotEnergised is wrapped by Pulse's error when the relay could not be
// energised: the door was not opened.
var ErrNotEnergised = errors.New("gpio: relay was not energised")

// ErrStillEnergised is wrapped by Halt's (and Pulse's) error when the relay
// could not be driven off, or not confirmed off, after every retry: the
// strike may still be powered.
var ErrStillEnergised = errors.New("gpio: relay may still be energised")
