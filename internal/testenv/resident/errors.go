package resident

import "errors"

var (
	// ErrExited is returned by WaitFor and the commands once the driver
	// process has ended (after Close, or because it failed).
	ErrExited = errors.New("resident: driver process has exited")

	// ErrNoSource is returned by Setup when it cannot find this package's
	// directory (driver.mjs, page/, package-lock.json) on disk.
	ErrNoSource = errors.New("resident: package directory not found (set " + DirEnv + ")")
)
