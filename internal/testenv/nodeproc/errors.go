package nodeproc

import "errors"

// ErrExited is returned by the waits and by Do once the driver process has
// ended (after Close, or because it failed). The harnesses export it as
// their own ErrExited.
var ErrExited = errors.New("nodeproc: driver process has exited")
