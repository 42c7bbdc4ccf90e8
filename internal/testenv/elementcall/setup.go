package elementcall

import (
	"context"

	"github.com/doorbell/intercom/internal/testenv/nodeproc"
)

// DirEnv names an environment variable that points at this package's
// directory (driver.mjs, setup.sh) when it cannot be found from the source
// path or the working directory. The directory needs its sibling
// nodeproc beside it: driver.mjs, setup.sh and the page import from there.
const DirEnv = "INTERCOM_ELEMENTCALL_DIR"

// setup runs setup.sh once per process.
var setup = nodeproc.Setup{Name: "elementcall", DirEnv: DirEnv, NoSource: ErrNoSource}

// Setup installs the pinned npm packages (Element Call's build among them)
// and bundles the host page (setup.sh), and returns the package directory.
// The script runs once per process and takes a file lock, so parallel test
// binaries do not race. A failed run is retried on the next call.
func Setup(ctx context.Context) (string, error) { return setup.Run(ctx) }
