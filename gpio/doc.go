// Package gpio drives the intercom's wired hardware: the doorbell button,
// the ringer (a bell or buzzer output) and the door relay. It takes
// periph.io's narrow pin interfaces (gpio.PinIn, gpio.PinOut), so the same
// code runs on the Linux GPIO character device, on the simulated pins of
// the "sim" backend and on periph.io's gpiotest fakes in tests.
package gpio
