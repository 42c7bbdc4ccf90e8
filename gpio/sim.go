package gpio

import (
	"periph.io/x/conn/v3/gpio/gpiotest"
)

// SimPin returns a simulated pin for the "sim" hardware backend: periph.io's
// own fake pin, which records the level driven to it. The intercom then runs
// the same ringer and relay code as on a board.
func SimPin(name string) *gpiotest.Pin {
	return &gpiotest.Pin{N: name, Num: -1, Fn: "sim"}
}
