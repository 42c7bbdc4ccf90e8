package daemon

import (
	"github.com/doorbell/intercom/provisioning/provisioningtest"

	"bytes"
	"strings"
	"testing"
)

// relay-off never needs the secrets (the password file may be gone), is a
// no-op in simulation and without a relay pin, and refuses a broken file
// with its problems.
func TestRelayOff(t *testing.T) {
	for _, tc := range []struct {
		name, cfg string
		code      int
		want      string
	}{
		{"sim, no password file", provisioningtest.Minimal, 0, "hardware.gpio is sim"},
		{"periph without relay", provisioningtest.Minimal + "hardware:\n  gpio: periph\ngpio:\n  button: GPIO17\n", 0, "no gpio.relay configured"},
		{"broken", provisioningtest.Minimal + "bogus: 1\n", 1, "intercom.yaml:7: bogus"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := provisioningtest.WriteConfig(t, tc.cfg, 0)
			var out, errOut bytes.Buffer
			code := RelayOff(path, &out, &errOut)
			if code != tc.code || !strings.Contains(out.String()+errOut.String(), tc.want) {
				t.Fatalf("exit %d (want %d), output:\n%s%s", code, tc.code, out.String(), errOut.String())
			}
		})
	}
}
