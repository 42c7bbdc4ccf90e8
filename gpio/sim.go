package gpio

import (
	pgpio "periph.io/x/conn/v3/gpio"
	"periph.io/x/conn/v3/gpio/gpiotest"
)

// SimPin returns a simulated pin for the "sim" hardware backend: periph.io's
// own fake pin, which records the level driven to it. The intercom then runs
// the same ringer and relay code as on a board.
func SimPin(name string) *gpiotest.Pin {
	return &gpiotest.Pin{N: name, Num: -1, Fn: "sim"}
}

// SimButtonPin returns a simulated input pin whose edges can be driven
// through its EdgesChan, for the "sim" backend's button and for tests.
func SimButtonPin(name string) *gpiotest.Pin {
	p := SimPin(name)
	p.EdgesChan = make(chan pgpio.Level, 16)
	return p
}
