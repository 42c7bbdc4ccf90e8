//go:build unix && !linux

package livekit

import "syscall"

// sysProcAttr puts the server in its own process group, so Stop can signal
// everything it runs. Outside Linux there is no parent-death signal: only
// Stop (through t.Cleanup) ends the server.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true}
}
