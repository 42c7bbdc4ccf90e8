//go:build !linux

package main

import "syscall"

// sysProcAttr puts the intercom in its own process group, so that Ctrl-C in
// the terminal reaches only the demo, which then stops the intercom before
// Dendrite. Outside Linux there is no parent-death signal.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true}
}
