// Package cputime reads the CPU time the benchmarks compare: the whole
// process's, user and system, threads that Go did not start (codec
// libraries) included, which a Go CPU profile would miss.
package cputime

import (
	"syscall"
	"time"
)

// Self returns the CPU time this process has used so far, or 0 if the
// kernel would not say.
func Self() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// Switches returns how many times this process's threads have given up
// the CPU so far, voluntarily (blocking: a wait for a packet, a timer, a
// lock) and not: each one is a thread going to sleep or being woken, which
// on a VM costs far more than the work that caused it.
func Switches() (voluntary, involuntary int64) {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0, 0
	}
	return ru.Nvcsw, ru.Nivcsw
}
