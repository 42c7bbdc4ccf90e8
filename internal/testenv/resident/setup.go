package resident

import (
	"context"
	"net/http"
	"path/filepath"

	"github.com/doorbell/intercom/internal/testenv/nodeproc"
)

// DirEnv names an environment variable that points at this package's
// directory (the one holding driver.mjs and setup.sh) when it cannot be found
// from the source path or the working directory, e.g. for a binary built with
// -trimpath and run elsewhere. The directory needs its sibling
// nodeproc beside it: driver.mjs, setup.sh and the page import from there.
const DirEnv = "INTERCOM_RESIDENT_DIR"

// setup runs setup.sh once per process.
var setup = nodeproc.Setup{Name: "resident", DirEnv: DirEnv, NoSource: ErrNoSource}

// Setup installs the resident's npm packages and bundles its page (setup.sh)
// and returns the package directory. The script runs once per process; it is
// cheap when nothing changed and takes a file lock, so parallel test binaries
// do not race. A failed run is retried on the next call.
func Setup(ctx context.Context) (dir string, err error) { return setup.Run(ctx) }

// Handler serves the page bundled by Setup (dir is what Setup returned). The
// page refers to its script relatively, so it can be mounted under any
// prefix; the demo mounts it next to the intercom's API, which the page's
// "Ring the doorbell" button calls as /api/ring on the same origin:
//
//	mux.Handle("/resident/", http.StripPrefix("/resident", resident.Handler(dir)))
//
// A person then opens /resident/#hs=<homeserver>&user=<id>&password=<pw>
// (or fills in the login form that appears without them).
func Handler(dir string) http.Handler {
	files := http.FileServer(http.Dir(filepath.Join(dir, "dist")))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "no-store")
		files.ServeHTTP(w, r)
	})
}
