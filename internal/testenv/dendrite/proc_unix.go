//go:build unix && !linux

package dendrite

import (
	"os"
	"syscall"
)

// sysProcAttr puts Dendrite in its own process group, so Stop can signal
// everything it runs. Outside Linux there is no parent-death signal: only
// Stop (through t.Cleanup) ends the homeserver.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true}
}

// fastTempDir returns "": only Linux has a tmpfs at a known place.
func fastTempDir() (string, *os.File) { return "", nil }
