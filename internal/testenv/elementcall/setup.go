package elementcall

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
)

// DirEnv names an environment variable that points at this package's
// directory (driver.mjs, setup.sh) when it cannot be found from the source
// path or the working directory.
const DirEnv = "INTERCOM_ELEMENTCALL_DIR"

// setupState remembers a successful setup.sh per process: the script is
// cheap when nothing changed, but not free (it hashes the page sources).
type setupState struct {
	mu  sync.Mutex
	dir string
}

var setupOnce setupState

// Setup installs the pinned npm packages (Element Call's build among them)
// and bundles the host page (setup.sh), and returns the package directory.
// The script runs once per process and takes a file lock, so parallel test
// binaries do not race. A failed run is retried on the next call.
func Setup(ctx context.Context) (string, error) {
	s := &setupOnce
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.dir != "" {
		return s.dir, nil
	}
	dir, err := packageDir()
	if err != nil {
		return "", err
	}
	cmd := exec.CommandContext(ctx, "sh", filepath.Join(dir, "setup.sh"))
	cmd.Dir = dir
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("run %s: %w\n%s", filepath.Join(dir, "setup.sh"), err, tail(out.String(), 4000))
	}
	s.dir = dir
	return dir, nil
}

// packageDir finds the directory holding driver.mjs: $INTERCOM_ELEMENTCALL_DIR,
// else this source file's directory, else internal/testenv/elementcall under
// the module root above the working directory.
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
		if c := filepath.Join(d, "internal", "testenv", "elementcall"); isPackageDir(c) {
			return c, nil
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
