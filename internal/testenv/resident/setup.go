package resident

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
)

// DirEnv names an environment variable that points at this package's
// directory (the one holding driver.mjs and setup.sh) when it cannot be found
// from the source path or the working directory, e.g. for a binary built with
// -trimpath and run elsewhere.
const DirEnv = "INTERCOM_RESIDENT_DIR"

var (
	setupMu  sync.Mutex
	setupDir string // set once setup.sh succeeded in this process
)

// Setup installs the resident's npm packages and bundles its page (setup.sh)
// and returns the package directory. The script runs once per process; it is
// cheap when nothing changed and takes a file lock, so parallel test binaries
// do not race. A failed run is retried on the next call.
func Setup(ctx context.Context) (dir string, err error) {
	setupMu.Lock()
	defer setupMu.Unlock()
	if setupDir != "" {
		return setupDir, nil
	}
	dir, err = packageDir()
	if err != nil {
		return "", err
	}
	cmd := exec.CommandContext(ctx, "sh", filepath.Join(dir, "setup.sh"))
	cmd.Dir = dir
	var out bytes.Buffer
	cmd.Stdout = &out
	cmd.Stderr = &out
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("run %s: %w\n%s", filepath.Join(dir, "setup.sh"), err, tail(out.String(), 4000))
	}
	setupDir = dir
	return dir, nil
}

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

// packageDir finds the directory holding driver.mjs: $INTERCOM_RESIDENT_DIR,
// else this source file's directory, else internal/testenv/resident under the
// module root above the working directory.
func packageDir() (string, error) {
	if dir := os.Getenv(DirEnv); dir != "" {
		if isPackageDir(dir) {
			return filepath.Abs(dir)
		}
		return "", fmt.Errorf("use $%s=%q: %w", DirEnv, dir, ErrNoSource)
	}
	if _, file, _, ok := runtime.Caller(0); ok && filepath.IsAbs(file) && isPackageDir(filepath.Dir(file)) {
		return filepath.Dir(file), nil
	}
	wd, err := os.Getwd()
	if err != nil {
		return "", fmt.Errorf("find package directory: %w", err)
	}
	for d := wd; ; d = filepath.Dir(d) {
		if c := filepath.Join(d, "internal", "testenv", "resident"); isPackageDir(c) {
			return c, nil
		}
		if isPackageDir(d) {
			return d, nil
		}
		if filepath.Dir(d) == d {
			return "", ErrNoSource
		}
	}
}

func isPackageDir(dir string) bool {
	for _, name := range []string{"driver.mjs", "setup.sh", "package-lock.json"} {
		if _, err := os.Stat(filepath.Join(dir, name)); err != nil {
			return false
		}
	}
	return true
}

func tail(s string, n int) string {
	s = strings.TrimSpace(s)
	if len(s) > n {
		return "…" + s[len(s)-n:]
	}
	return s
}
