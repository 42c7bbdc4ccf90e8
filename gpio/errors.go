package gpio

import "errors"

// ErrNoPin is returned by Lookup when no registered driver has a pin of
// that name (wrong name, or no GPIO chip on this machine).
var ErrNoPin = errors.New("gpio: no such pin")
