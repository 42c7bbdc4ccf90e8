package daemon

import (
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	pgpio "periph.io/x/conn/v3/gpio"
	"periph.io/x/host/v3"

	"github.com/doorbell/intercom/gpio"
	"github.com/doorbell/intercom/provisioning"
)

// relay-off's exit statuses.
const (
	relayOffDone    = 0 // the relay is off, or there is none to drive
	relayOffUnknown = 1 // a relay setting could not be read: nothing driven
	relayOffFailed  = 2 // the pin could not be driven off: the strike may be powered
)

// relayOffBudget bounds relay-off's retries. systemd gives ExecStopPost the
// unit's TimeoutStopSec (10 s in systemd/intercom.service); a relay-off that
// fails makes the stop a failure, and Restart=always then starts the daemon,
// whose NewRelay drives the pin off again, and relay-off follows its exit:
// the relay is never given up on.
const relayOffBudget = 8 * time.Second

// relayOffPause is the wait between two of relay-off's attempts, each of
// which already retries the pin's writes (gpio.Relay.Halt).
const relayOffPause = 250 * time.Millisecond

// RelayOff drives the configured door-relay pin to its de-energised level.
// systemd runs it as ExecStopPost after every stop of the daemon, including
// a crash, a watchdog kill or SIGKILL, when the daemon's own Halt never ran:
// a strike left energised leaves the door open and overheats.
//
// It reads only the relay settings (provisioning.ParseRelay), never the
// secrets nor any other key: a missing password file or a bad edit
// elsewhere in the file must not keep the door unlocked. With
// hardware.gpio: sim, or without a relay pin, there is nothing to drive.
// A relay setting it cannot read it does not guess: the wrong off level is
// the on level. It retries a pin that cannot be opened or driven off for
// relayOffBudget. Exit status: 0 off (or no relay), 1 not driven (a relay
// setting unreadable), 2 not confirmed off.
func RelayOff(path string, stdout, stderr io.Writer) int {
	return relayOff(path, stdout, stderr, openRelayPin)
}

// openRelayPin registers periph's drivers (the Linux GPIO character
// device) and returns the named pin.
func openRelayPin(name string) (pgpio.PinOut, error) {
	if _, err := host.Init(); err != nil {
		return nil, fmt.Errorf("gpio drivers: %w", err)
	}
	return gpio.Lookup(name)
}

// relayOff is RelayOff with the pin opened by open.
func relayOff(path string, stdout, stderr io.Writer, open func(name string) (pgpio.PinOut, error)) int {
	s, err := provisioning.ParseRelay(path)
	if ps := provisioning.Problems(nil); errors.As(err, &ps) {
		for _, p := range ps {
			fmt.Fprintln(stderr, p)
		}
	} else if err != nil {
		fmt.Fprintln(stderr, "intercom relay-off:", err)
	}
	switch {
	case s.Known("hardware.gpio") && s.GPIO == "sim":
		fmt.Fprintln(stdout, "relay-off: hardware.gpio is sim; no pin to drive")
		return relayOffDone
	case !s.Known("gpio.relay"):
		fmt.Fprintf(stderr, "intercom relay-off: relay pin unknown (gpio.relay in %s); not driven\n", path)
		return relayOffUnknown
	case s.Relay == "":
		fmt.Fprintln(stdout, "relay-off: no gpio.relay configured; no pin to drive")
		return relayOffDone
	case !s.Known("gpio.relay_active"):
		fmt.Fprintf(stderr, "intercom relay-off: gpio.relay_active unknown; %s not driven (its off level could be either)\n", s.Relay)
		return relayOffUnknown
	}
	polarity, err := gpio.ParsePolarity(s.RelayActive)
	if err != nil {
		fmt.Fprintln(stderr, "intercom relay-off:", err)
		return relayOffUnknown
	}
	if !s.Known("hardware.gpio") {
		// The daemon may have run with periph before the bad edit; driving
		// the relay's pin off is safe either way.
		fmt.Fprintf(stderr, "intercom relay-off: hardware.gpio unreadable; driving %s off anyway\n", s.Relay)
	}
	deadline := time.Now().Add(relayOffBudget)
	var last string
	attempt := 1
	for ; ; attempt++ {
		err := driveOff(open, s.Relay, polarity)
		if err == nil {
			fmt.Fprintf(stdout, "relay-off: %s driven to its off level (active %s)\n", s.Relay, s.RelayActive)
			return relayOffDone
		}
		if err.Error() != last { // one line per distinct failure, not per attempt
			last = err.Error()
			fmt.Fprintf(stderr, "intercom relay-off: attempt %d: %v\n", attempt, err)
		}
		if !time.Now().Add(relayOffPause).Before(deadline) {
			break
		}
		time.Sleep(relayOffPause)
	}
	fmt.Fprintf(stderr, "intercom relay-off: %s NOT confirmed off after %d attempts in %v: the strike may still be powered\n",
		s.Relay, attempt, relayOffBudget)
	return relayOffFailed
}

// driveOff opens the pin and drives it off (NewRelay halts it, with
// retries, before returning).
func driveOff(open func(string) (pgpio.PinOut, error), name string, polarity gpio.Polarity) error {
	pin, err := open(name)
	if err != nil {
		return err
	}
	_, err = gpio.NewRelay(pin, polarity)
	return err
}

// readConfigFile reads a configuration file with the same size bound Load
// uses.
func readConfigFile(path string) ([]byte, error) {
	data, err := readLimited(path, 1<<20)
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	return data, nil
}

func readLimited(path string, limit int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err == nil && int64(len(data)) > limit {
		err = fmt.Errorf("%s is larger than %d bytes", path, limit)
	}
	return data, err
}
