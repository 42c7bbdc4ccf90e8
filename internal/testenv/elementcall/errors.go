package elementcall

import "errors"

var (
	// ErrExited is returned by the waits and commands once the driver
	// process has ended (after Close, or because it failed).
	ErrExited = errors.New("elementcall: driver process has exited")

	// ErrNoSource is returned by Setup when it cannot find this package's
	// directory (driver.mjs, page/, package-lock.json) on disk.
	ErrNoSource = errors.New("elementcall: package directory not found (set " + DirEnv + ")")
)
