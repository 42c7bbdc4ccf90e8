package main

import "syscall"

// sysProcAttr puts the intercom in its own process group, so that Ctrl-C in
// the terminal reaches only the demo, which then stops the intercom before
// Dendrite; and it asks the kernel to SIGTERM the intercom if the demo dies
// without stopping it (startIntercom keeps the starting thread alive, since
// the parent-death signal follows the thread, not the process).
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
}
