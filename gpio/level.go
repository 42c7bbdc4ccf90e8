package gpio

import pgpio "periph.io/x/conn/v3/gpio"

// Polarity says which electrical level means "on" for an output (or
// "pressed" for an input). Relay boards are often active-low.
type Polarity bool

const (
	ActiveHigh Polarity = false
	ActiveLow  Polarity = true
)

func (p Polarity) level(on bool) pgpio.Level {
	return pgpio.Level(on != bool(p))
}

func (p Polarity) on(l pgpio.Level) bool { return bool(l) != bool(p) }
