package daemon

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"periph.io/x/host/v3"

	"github.com/doorbell/intercom/gpio"
	"github.com/doorbell/intercom/provisioning"
)

// RelayOff drives the configured door-relay pin to its de-energised level.
// systemd runs it as ExecStopPost after every stop of the daemon, including
// a crash, a watchdog kill or SIGKILL, when the daemon's own Halt never ran:
// a strike left energised leaves the door open and overheats.
//
// It reads only the configuration file, never the secrets: a missing
// password file must not keep the door unlocked. With hardware.gpio: sim,
// or without a relay pin, there is nothing to drive.
func RelayOff(path string, stdout, stderr io.Writer) int {
	data, err := readConfigFile(path)
	if err != nil {
		fmt.Fprintln(stderr, "intercom relay-off:", err)
		return 1
	}
	dir, err := filepath.Abs(filepath.Dir(path))
	if err != nil {
		fmt.Fprintln(stderr, "intercom relay-off:", err)
		return 1
	}
	cfg, err := provisioning.Parse(path, data, dir)
	if err != nil {
		var ps provisioning.Problems
		if errors.As(err, &ps) {
			for _, p := range ps {
				fmt.Fprintln(stderr, p)
			}
		}
		fmt.Fprintf(stderr, "intercom relay-off: %s has problems; relay pin unknown, not driven\n", path)
		return 1
	}
	switch {
	case cfg.Hardware.GPIO == "sim":
		fmt.Fprintln(stdout, "relay-off: hardware.gpio is sim; no pin to drive")
		return 0
	case cfg.GPIO.Relay == "":
		fmt.Fprintln(stdout, "relay-off: no gpio.relay configured; no pin to drive")
		return 0
	}
	polarity, err := gpio.ParsePolarity(cfg.GPIO.RelayActive)
	if err != nil {
		fmt.Fprintln(stderr, "intercom relay-off:", err)
		return 1
	}
	if _, err := host.Init(); err != nil {
		fmt.Fprintln(stderr, "intercom relay-off: gpio drivers:", err)
		return 1
	}
	pin, err := gpio.Lookup(cfg.GPIO.Relay)
	if err != nil {
		fmt.Fprintln(stderr, "intercom relay-off:", err)
		return 1
	}
	// NewRelay drives the pin to its off level before returning.
	if _, err := gpio.NewRelay(pin, polarity); err != nil {
		fmt.Fprintln(stderr, "intercom relay-off:", err)
		return 1
	}
	fmt.Fprintf(stdout, "relay-off: %s driven to its off level (active %s)\n", cfg.GPIO.Relay, cfg.GPIO.RelayActive)
	return 0
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
