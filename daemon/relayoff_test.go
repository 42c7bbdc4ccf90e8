package daemon

import (
	"bytes"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	pgpio "periph.io/x/conn/v3/gpio"

	"github.com/doorbell/intercom/gpio"
	"github.com/doorbell/intercom/gpio/gpiofake"
	"github.com/doorbell/intercom/provisioning/provisioningtest"
)

// periphRelay is the hardware part of a board with its strike on GPIO27,
// active high.
const periphRelay = "hardware:\n  gpio: periph\ngpio:\n  button: GPIO17\n  relay: GPIO27\n  relay_active: high\n"

// relay-off never needs the secrets (the password file may be gone), is a
// no-op in simulation and without a relay pin, reads nothing but the relay
// settings (a crash after a bad edit elsewhere must not leave the strike
// powered), refuses to guess a relay setting it cannot read, and retries a
// pin that fails until its time is up; the exit status says which.
func TestRelayOff(t *testing.T) {
	for _, tc := range []struct {
		name, cfg   string
		fail        int // pin writes that fail; -1: all
		lookupFails int // opens of the pin that fail first
		code        int
		want        []string
		driven      bool // the pin ends off; otherwise it is left as it was
	}{
		{name: "sim, no password file", cfg: provisioningtest.Minimal,
			want: []string{"hardware.gpio is sim"}},
		{name: "periph without relay", cfg: provisioningtest.Minimal + "hardware:\n  gpio: periph\ngpio:\n  button: GPIO17\n",
			want: []string{"no gpio.relay configured"}},
		{name: "periph", cfg: provisioningtest.Minimal + periphRelay,
			want: []string{"GPIO27 driven to its off level"}, driven: true},
		{name: "unrelated keys broken", cfg: provisioningtest.Minimal + periphRelay + "bogus: 1\nvideo:\n  fps: 99\nresidents: []\n",
			want: []string{"GPIO27 driven to its off level"}, driven: true},
		{name: "nothing but the relay", cfg: periphRelay,
			want: []string{"GPIO27 driven to its off level"}, driven: true},
		{name: "syntax error elsewhere", cfg: periphRelay + "matrix:\n  homeserver: http://127.0.0.1:8008\nresidents:\n\t- \"@alice:example.org\"\n",
			want: []string{"intercom.yaml:10: invalid YAML", "GPIO27 driven to its off level"}, driven: true},
		{name: "hardware.gpio misspelt", cfg: strings.Replace(periphRelay, "gpio: periph", "gpio: perihp", 1),
			want: []string{"intercom.yaml:2: hardware.gpio", "GPIO27 driven to its off level"}, driven: true},
		{name: "relay_active broken", cfg: strings.Replace(periphRelay, "relay_active: high", "relay_active: hihg", 1), code: 1,
			want: []string{"intercom.yaml:6: gpio.relay_active", "GPIO27 not driven"}},
		{name: "relay without value", cfg: strings.Replace(periphRelay, "relay: GPIO27", "relay:", 1), code: 1,
			want: []string{"intercom.yaml:5: gpio.relay: has no value", "relay pin unknown"}},
		{name: "gpio section broken", cfg: "hardware:\n  gpio: periph\ngpio: GPIO27\n", code: 1,
			want: []string{"intercom.yaml:3: gpio: must be a mapping", "relay pin unknown"}},
		{name: "pin fails a while", cfg: periphRelay, fail: 12,
			want: []string{"attempt 1:", "GPIO27 driven to its off level"}, driven: true},
		{name: "pin not there at first", cfg: periphRelay, lookupFails: 2,
			want: []string{"attempt 1:", "GPIO27 driven to its off level"}, driven: true},
		{name: "pin never goes off", cfg: periphRelay, fail: -1, code: 2,
			want: []string{"GPIO27 NOT confirmed off", "may still be powered"}},
		{name: "no file", cfg: "", code: 1, want: []string{"read config"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := provisioningtest.WriteConfig(t, tc.cfg, 0)
			if tc.cfg == "" {
				path += ".missing"
			}
			synctest.Test(t, func(t *testing.T) {
				pin := gpiofake.NewFlakyPin("GPIO27", pgpio.High) // energised when relay-off starts
				pin.Set(tc.fail, 0)
				lookups := 0
				open := func(name string) (pgpio.PinOut, error) {
					lookups++
					if name != "GPIO27" {
						t.Errorf("relay-off opened %q", name)
					}
					if lookups <= tc.lookupFails {
						return nil, gpio.ErrNoPin
					}
					return pin, nil
				}
				var out, errOut bytes.Buffer
				start := time.Now()
				code := relayOff(path, &out, &errOut, open)
				all := out.String() + errOut.String()
				if code != tc.code {
					t.Errorf("exit %d, want %d", code, tc.code)
				}
				for _, w := range tc.want {
					if !strings.Contains(all, w) {
						t.Errorf("output lacks %q", w)
					}
				}
				if off := pin.Read() == pgpio.Low; off != tc.driven {
					t.Errorf("pin off %v, want %v", off, tc.driven)
				}
				if d := time.Since(start); d > relayOffBudget+2*time.Second {
					t.Errorf("relay-off took %v, beyond its budget %v (the unit's TimeoutStopSec is 10 s)", d, relayOffBudget)
				}
				if t.Failed() {
					t.Logf("output:\n%s", all)
				}
			})
		})
	}
}
