// Package provisioningtest writes configuration files for tests of the
// packages that read them (the daemon, the command line).
package provisioningtest

import (
	"os"
	"path/filepath"
	"testing"
)

// Minimal is the smallest valid configuration: a homeserver, the
// intercom's account with a password file beside the config, a state
// directory and one resident.
const Minimal = "matrix:\n  homeserver: http://127.0.0.1:8008\n  user_id: \"@door:example.org\"\n  password_file: ./password\nstate_dir: ./state\nresidents: [\"@alice:example.org\"]\n"

// WriteConfig writes cfg as intercom.yaml into a new temporary directory
// and returns its path. With secretMode other than 0 it also writes the
// password file ("hunter2-secret") with that mode.
func WriteConfig(t testing.TB, cfg string, secretMode os.FileMode) string {
	t.Helper()
	dir := t.TempDir()
	if secretMode != 0 {
		pw := filepath.Join(dir, "password")
		if err := os.WriteFile(pw, []byte("hunter2-secret"), secretMode); err != nil {
			t.Fatal(err)
		}
		// WriteFile's mode is filtered by the umask.
		if err := os.Chmod(pw, secretMode); err != nil {
			t.Fatal(err)
		}
	}
	path := filepath.Join(dir, "intercom.yaml")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}
