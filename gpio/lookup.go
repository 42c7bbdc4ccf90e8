package gpio

import (
	"fmt"

	pgpio "periph.io/x/conn/v3/gpio"
	"periph.io/x/conn/v3/gpio/gpioreg"
)

// Lookup returns the pin registered under name ("GPIO17" on a Raspberry
// Pi's character device, or an alias). The drivers must have been
// registered first: host.Init() in cmd.
func Lookup(name string) (pgpio.PinIO, error) {
	p := gpioreg.ByName(name)
	if p == nil {
		return nil, fmt.Errorf("gpio pin %q: %w", name, ErrNoPin)
	}
	return p, nil
}

// ParsePolarity reads "high" or "low", the active level of a pin.
func ParsePolarity(s string) (Polarity, error) {
	switch s {
	case "high":
		return ActiveHigh, nil
	case "low":
		return ActiveLow, nil
	}
	return ActiveHigh, fmt.Errorf("gpio polarity %q: want high or low", s)
}
