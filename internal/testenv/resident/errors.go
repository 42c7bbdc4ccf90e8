package resident

import (
	"errors"

	"github.com/doorbell/intercom/internal/testenv/nodeproc"
)

var (
	// ErrExited is returned by WaitFor and the commands once the driver
	// process has ended (after Close, or because it failed). It is
	// nodeproc's, shared with the other browser harness.
	ErrExited = nodeproc.ErrExited

	// ErrNoSource is returned by Setup when it cannot find this package's
	// directory (driver.mjs, page/, package-lock.json) on disk.
	ErrNoSource = errors.New("resident: package directory not found (set " + DirEnv + ")")
)
