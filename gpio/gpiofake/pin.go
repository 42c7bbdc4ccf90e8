// Package gpiofake has test pins for the relay's failure paths: periph's
// fake pin (gpiotest.Pin) behind a driver that fails or loses writes.
package gpiofake

import (
	"errors"
	"sync"

	pgpio "periph.io/x/conn/v3/gpio"
	"periph.io/x/conn/v3/gpio/gpiotest"
)

// ErrWrite is what a failing write returns.
var ErrWrite = errors.New("flaky pin: write failed")

// FlakyPin is periph's fake pin with a driver that fails: its next fail
// writes return ErrWrite (fail < 0: every write), and its next lose writes
// report success without changing the level (a write lost on the way, as
// an I²C expander can). It reads back the level it really holds
// (gpio.OutputReader).
type FlakyPin struct {
	*gpiotest.Pin
	mu         sync.Mutex
	fail, lose int
	outs       int // writes attempted
}

// NewFlakyPin returns a pin called name holding level l, every write
// succeeding until Set says otherwise.
func NewFlakyPin(name string, l pgpio.Level) *FlakyPin {
	return &FlakyPin{Pin: &gpiotest.Pin{N: name, Num: -1, Fn: "sim", L: l}}
}

// Out writes l, unless the driver is told to fail or lose it.
func (p *FlakyPin) Out(l pgpio.Level) error {
	p.mu.Lock()
	p.outs++
	switch {
	case p.fail != 0:
		if p.fail > 0 {
			p.fail--
		}
		p.mu.Unlock()
		return ErrWrite
	case p.lose > 0:
		p.lose--
		p.mu.Unlock()
		return nil
	}
	p.mu.Unlock()
	return p.Pin.Out(l)
}

// OutputLevel is the level the pin really holds.
func (p *FlakyPin) OutputLevel() pgpio.Level { return p.Pin.Read() }

// Set makes the next fail writes fail (< 0: all of them) and the next lose
// writes get lost.
func (p *FlakyPin) Set(fail, lose int) {
	p.mu.Lock()
	p.fail, p.lose = fail, lose
	p.mu.Unlock()
}

// Writes is how many writes were attempted.
func (p *FlakyPin) Writes() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.outs
}
