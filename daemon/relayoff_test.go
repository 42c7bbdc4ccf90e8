package daemon

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func writeConfig(t *testing.T, cfg string, secretMode os.FileMode) string {
	t.Helper()
	dir := t.TempDir()
	if secretMode != 0 {
		if err := os.WriteFile(filepath.Join(dir, "password"), []byte("hunter2-secret"), secretMode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(filepath.Join(dir, "password"), secretMode); err != nil {
			t.Fatal(err)
		}
	}
	path := filepath.Join(dir, "intercom.yaml")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

const minimalConfig = "matrix:\n  homeserver: http://127.0.0.1:8008\n  user_id: \"@door:example.org\"\n  password_file: ./password\nstate_dir: ./state\nresidents: [\"@alice:example.org\"]\n"

// relay-off never needs the secrets (the password file may be gone), is a
// no-op in simulation and without a relay pin, and refuses a broken file
// with its problems.
func TestRelayOff(t *testing.T) {
	for _, tc := range []struct {
		name, cfg string
		code      int
		want      string
	}{
		{"sim, no password file", minimalConfig, 0, "hardware.gpio is sim"},
		{"periph without relay", minimalConfig + "hardware:\n  gpio: periph\ngpio:\n  button: GPIO17\n", 0, "no gpio.relay configured"},
		{"broken", minimalConfig + "bogus: 1\n", 1, "intercom.yaml:7: bogus"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := writeConfig(t, tc.cfg, 0)
			var out, errOut bytes.Buffer
			code := RelayOff(path, &out, &errOut)
			if code != tc.code || !strings.Contains(out.String()+errOut.String(), tc.want) {
				t.Fatalf("exit %d (want %d), output:\n%s%s", code, tc.code, out.String(), errOut.String())
			}
		})
	}
}
