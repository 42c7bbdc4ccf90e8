package livekit

import "syscall"

// sysProcAttr puts the server in its own process group, so Stop can signal
// everything it runs, and asks the kernel to SIGKILL it when the thread that
// started it dies: a test binary that panics, times out or calls os.Exit
// never leaves an SFU behind. The starting thread is locked for the child's
// lifetime (see launch), because Pdeathsig follows the thread, not the
// process.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}
